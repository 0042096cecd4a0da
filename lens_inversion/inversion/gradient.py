"""Gradient-descent input inversion, as in the research.

On the input embedding ("embedding", decoded by the pseudoinverse of W_E) or on a
token-space vector x ("direct", x @ W_E enters the model). Restarts run together in the
batch dimension.

The run is four short steps over small plan objects: `GradientOptions` (every option,
checked once), `build` (a `GradientPlan`: targets, observed values, embedding table,
fixed BOS prefix), `start` (the initial variable) and, after `optimise`, `decode` (tokens,
top-k and the best restart per prompt).
"""

import dataclasses
import inspect
import time
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..bos import starts_with_bos
from ..deprecation import Rename, invert_bool, renamed_options
from ..errors import OptionError, PromptError
from ..hooks import ModelAdapter, Target, adapter_for, preserves_model
from ..hooks.targets import index_positions
from ..validation import check_bool, check_choice, check_int, check_number, check_seed, validates_own_arguments
from .decode import DECODINGS, EmbeddingTable, allowed_mask, embedding_scores, mask_scores
from .losses import LossFn, LossName, loss_function, tensor_sum, total_distance
from .observed import as_targets, observe
from .result import GradientTrace, InversionResult, InversionVerdict, gradient_verdict

GradientMethod = Literal["embedding", "direct"]
GRADIENT_METHODS = ("embedding", "direct")
Optimizer = Literal["sgd", "adam"]
OPTIMIZERS = ("sgd", "adam")
Start = Literal["noise", "mixed"]
STARTS = ("noise", "mixed")
DEFAULT_LR = {"sgd": 20.0, "adam": 0.05}
MAX_RESTARTS = 4096  # restarts run side by side in the batch axis: a memory bound, not a tuning knob
VERDICT_RELATIVE_TOLERANCE = 1e-4  # the exact search's default tolerance, so both verdicts mean the same


@validates_own_arguments  # built from raw user values, then checked
@dataclasses.dataclass(frozen=True, kw_only=True)
class GradientOptions:
    """Every option of a gradient inversion, checked by `checked()` before anything runs.

    Attributes:
        method: `"embedding"` (optimise the embedding, decode with `decoding`) or `"direct"`
            (optimise x in token space, x @ W_E · scale enters; decode by argmax of x).
        loss: `"l1"`, `"l2"`, `"cosine"`, `"combined"` (α(1 − cos φ) + β·l1) or a callable
            (output, target) -> [batch]; distances are means over elements (see losses).
        alpha: weight of 1 − cos φ in the combined loss.
        beta: weight of l1 in the combined loss.
        steps: N optimisation steps (per position when sequential).
        lr: initial learning rate η (default: 20 for SGD, 0.05 for Adam).
        lr_end_factor: the rate decays linearly from η to η·lr_end_factor.
        optimizer: `"sgd"` (the research) or `"adam"`.
        momentum: SGD momentum, in [0, 1).
        start: `"noise"` or `"mixed"` (noise_weight·noise + target_weight·true input;
            needs a prompt).
        noise_weight: s in the mixed start.
        target_weight: t in the mixed start.
        noise_mean: μ of the start noise N(μ, σ) (the research: 1/2).
        noise_std: σ of the start noise (the research: 1/20).
        decoding: `"pinv"`, `"cosine"` or `"l2"` (nearest row of W_E) decode the input
            embedding; `"argmax"` (direct method only) takes the largest entry of x.
            Default: "pinv" for the embedding method, "argmax" for the direct one.
        allowed_tokens: restrict decoding (−inf mask) and, for "direct", x's columns.
        top_k: decodings kept per position.
        n_restarts: independent starts (at most 4096) run together in the batch axis; the one whose
            decoded tokens come closest is kept (ties: the closer continuous input).
        shift_std: σ of the shifted-input yardstick e′ = e + N(0, σ) (needs a prompt).
        stop_when_closer: stop once every prompt's best restart beats its shifted input.
        sequential: optimise one position at a time (steps each), earlier ones frozen.
        embedding_from: another model whose W_E replaces this model's (same d_model).
        include_bos: optimise the BOS position too; by default (False) position 0 is held at
            the BOS embedding when the model has a BOS token (old spelling: `fix_bos=True`).
        n_pos: length of the hidden input for raw activations with a token slice.
        seed: seed of the start noise and of the shift (None: fresh randomness).
        progress: show a progress bar.
    """

    method: GradientMethod = "embedding"
    loss: "LossName | object" = "l1"
    alpha: float = 1.0
    beta: float = 1.0
    steps: int = 200
    lr: float | None = None
    lr_end_factor: float = 0.1
    optimizer: Optimizer = "sgd"
    momentum: float = 0.0
    start: Start = "noise"
    noise_weight: float = 1.0
    target_weight: float = 1.0
    noise_mean: float = 0.5
    noise_std: float = 0.05
    decoding: Literal["pinv", "cosine", "l2", "argmax"] | None = None
    allowed_tokens: object = None
    top_k: int = 5
    n_restarts: int = 1
    shift_std: float = 0.05
    stop_when_closer: bool = False
    sequential: bool = False
    embedding_from: object = None
    include_bos: bool = False
    n_pos: int | None = None
    seed: int | None = 0
    progress: bool = True

    def checked(self) -> "GradientOptions":
        """These options with the decoding default filled in; OptionError for any bad value."""
        check_choice("method", self.method, GRADIENT_METHODS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("start", self.start, STARTS)
        decoding = self.decoding if self.decoding is not None else ("pinv" if self.method == "embedding" else "argmax")
        check_choice("decoding", decoding, DECODINGS + (("argmax",) if self.method == "direct" else ()))
        for name in ("steps", "top_k"):
            check_int(name, getattr(self, name), low=1)
        check_int("n_restarts", self.n_restarts, low=1, high=MAX_RESTARTS)
        check_int("n_pos", self.n_pos, low=1, allow_none=True)
        check_number("lr", self.lr, low=0, low_open=True, allow_none=True, none_means="for the optimizer's default")
        check_number("lr_end_factor", self.lr_end_factor, low=0, high=1, low_open=True)
        for name in ("noise_std", "shift_std", "alpha", "beta"):
            check_number(name, getattr(self, name), low=0)
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        for name in ("noise_mean", "noise_weight", "target_weight"):
            check_number(name, getattr(self, name))
        for name in ("stop_when_closer", "sequential", "include_bos", "progress"):
            check_bool(name, getattr(self, name))
        check_seed(self.seed)
        return dataclasses.replace(self, decoding=decoding)

    @property
    def learning_rate(self) -> float:
        """The initial rate: `lr`, or the optimizer's default."""
        return self.lr or DEFAULT_LR[self.optimizer]


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(GradientOptions))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GradientPlan:
    """Everything the optimisation loop needs, fixed before it starts."""

    adapter: ModelAdapter
    targets: tuple[Target, ...]  # batch slice dropped: restarts live in the batch axis
    names: tuple[str, ...]  # the targets as the user gave them (batch slice kept)
    values: tuple[Tensor, ...]  # [B, tokens, features], one per target
    repeated: tuple[Tensor, ...]  # the values repeated per restart, [B*R, tokens, features]
    table: EmbeddingTable
    method: str
    n_fixed: int  # leading positions held fixed (the BOS)
    prefix: Tensor  # [1, n_fixed, d_model] their embeddings
    columns: Tensor | None  # direct method: the allowed token ids (x's last axis)
    mask: Tensor | None  # the allowed tokens, [d_vocab] (None: all)
    loss_fn: LossFn
    true: Tensor | None  # [B, P] the true tokens when a prompt was given
    batch: int  # B prompts
    n_pos: int  # P positions
    restarts: int  # R restarts per prompt
    generator: torch.Generator | None

    def embeds(self, var: Tensor) -> Tensor:
        """The model's input embeddings: the fixed prefix, then `var` (through W_E for the direct method)."""
        e = var if self.method == "embedding" else self.table.from_token_space(var, self.columns)
        return torch.cat([self.prefix.expand(e.shape[0], -1, -1), e], dim=1)

    def outputs(self, embeds: Tensor) -> list[Tensor]:
        """Each target's observed slice of a run on `embeds`."""
        capture = self.adapter.run(embeds=embeds, capture=[t.key for t in self.targets])
        return [t.select(capture[t.key]) for t in self.targets]

    def distance(self, embeds: Tensor, upto: int | None = None) -> Tensor:
        """Per-row distance to the repeated target values, summed over targets (`upto`: positions <= upto only)."""
        outs, vals = self.outputs(embeds), list(self.repeated)
        if upto is not None:  # sequential: only the observed positions <= upto
            pairs = [_upto(t, o, v, embeds.shape[1], upto) for t, o, v in zip(self.targets, outs, vals, strict=True)]
            outs, vals = [p[0] for p in pairs], [p[1] for p in pairs]
        return total_distance(self.loss_fn, outs, vals)


def _upto(target: Target, out: Tensor, val: Tensor, n_pos: int, upto: int) -> tuple[Tensor, Tensor]:
    keep = [i for i, p in enumerate(target.token_positions(n_pos)) if p <= upto]
    if not keep:
        return out, val
    return out[:, keep], val[:, keep]


def _embedding_table(adapter, embedding_from) -> EmbeddingTable:
    """This model's embedding table, or `embedding_from`'s (same shape), on this model's device."""
    table = EmbeddingTable.of(adapter if embedding_from is None else embedding_from)
    if tuple(table.W_E.shape) != (adapter.d_vocab, adapter.d_model):
        raise OptionError(
            f"embedding_from has W_E of shape {tuple(table.W_E.shape)} but this model needs "
            f"{(adapter.d_vocab, adapter.d_model)}."
        )
    return dataclasses.replace(table, W_E=table.W_E.to(adapter.device))


def _observed(adapter, prompt_or_activation, targets, table: EmbeddingTable, opts: GradientOptions):
    """(observation, true tokens of the kept batch rows, values to reproduce)."""
    if len({str(t.batch) for t in targets}) > 1:
        raise OptionError(f"All targets must select the same batch rows; got {[str(t) for t in targets]}.")
    obs = observe(adapter, prompt_or_activation, targets, n_pos=opts.n_pos)
    true = obs.true_tokens
    if true is not None:  # the rows the targets' batch index keeps
        true = true[index_positions(targets[0].batch, true.shape[0], "batch")]
    values = obs.values
    if opts.embedding_from is not None and true is not None:
        with torch.no_grad():
            capture = adapter.run(embeds=table.embed(true), capture=[t.key for t in targets])
        values = tuple(t.select(capture[t.key]).detach().float() for t in targets)
    if opts.start == "mixed" and true is None:
        raise PromptError("start='mixed' mixes in the true input, so give a prompt rather than an activation.")
    return obs, true, values


def build(adapter, prompt_or_activation, target, opts: GradientOptions) -> GradientPlan:
    """The plan of one inversion: targets, observed values, table, the fixed BOS prefix."""
    loss_fn = loss_function(opts.loss, alpha=opts.alpha, beta=opts.beta)
    targets = as_targets(adapter, target)
    table = _embedding_table(adapter, opts.embedding_from)
    obs, true, values = _observed(adapter, prompt_or_activation, targets, table, opts)
    mask = allowed_mask(adapter, opts.allowed_tokens)
    bos, P = adapter.bos_token_id, obs.n_pos
    # A BOS is held fixed (left out of the descent) unless include_bos; a one-token input has nothing else.
    n_fixed = int(not opts.include_bos and bos is not None and P > 1 and (true is None or starts_with_bos(true, bos)))
    return GradientPlan(
        adapter=adapter, targets=tuple(dataclasses.replace(t, batch=slice(None)) for t in targets),
        names=tuple(str(t) for t in targets), values=values,
        repeated=tuple(v.repeat_interleave(opts.n_restarts, 0) for v in values), table=table, method=opts.method, n_fixed=n_fixed,
        prefix=table.embed(torch.full((1, n_fixed), bos or 0, dtype=torch.long)),
        columns=None if mask is None or opts.method == "embedding" else mask.nonzero().flatten(), mask=mask,
        loss_fn=loss_fn, true=true, batch=obs.batch, n_pos=P, restarts=opts.n_restarts,
        generator=torch.Generator().manual_seed(opts.seed) if opts.seed is not None else None,
    )


def start(plan: GradientPlan, opts: GradientOptions) -> Tensor:
    """The initial variable, [B*R, free positions, width]: noise, or noise mixed with the true input."""
    adapter = plan.adapter
    width = adapter.d_model if plan.method == "embedding" else (adapter.d_vocab if plan.columns is None else len(plan.columns))
    shape = (plan.batch * plan.restarts, plan.n_pos - plan.n_fixed, width)
    var = torch.normal(opts.noise_mean, opts.noise_std, shape, generator=plan.generator).to(adapter.device)
    if opts.start == "mixed":
        assert plan.true is not None  # narrowing: start="mixed" needs a prompt (checked in _observed)
        truth = _true_input(plan, plan.true[:, plan.n_fixed :], adapter.d_vocab).repeat_interleave(plan.restarts, 0)
        var = opts.noise_weight * var + opts.target_weight * truth
    return var.requires_grad_(True)


def shifted_distances(plan: GradientPlan, opts: GradientOptions) -> Tensor | None:
    """Per prompt, the distance of the shifted true input e′ = e + N(0, shift_std) (None without a prompt)."""
    if plan.true is None:
        return None
    e_true = plan.table.embed(plan.true)
    noise = torch.normal(0.0, opts.shift_std, e_true[:, plan.n_fixed :].shape, generator=plan.generator)
    with torch.no_grad():
        e_shift = torch.cat([e_true[:, : plan.n_fixed], e_true[:, plan.n_fixed :] + noise.to(e_true.device)], 1)
        return total_distance(plan.loss_fn, plan.outputs(e_shift), plan.values)


def _true_input(plan: GradientPlan, tokens: Tensor, d_vocab: int) -> Tensor:
    """The true input in the optimised space: embeddings, or one-hot rows over x's columns."""
    if plan.method == "embedding":
        return plan.table.embed(tokens)
    onehot = torch.nn.functional.one_hot(tokens, d_vocab).float()
    return onehot if plan.columns is None else onehot[..., plan.columns]


def _optimizer(var: Tensor, opts: GradientOptions):
    """A fresh optimizer and its linear rate decay for one phase."""
    lr = opts.learning_rate
    opt = torch.optim.SGD([var], lr=lr, momentum=opts.momentum) if opts.optimizer == "sgd" else torch.optim.Adam([var], lr=lr)
    return opt, torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=opts.lr_end_factor, total_iters=opts.steps)


def _descend(plan: GradientPlan, var: Tensor, phase: int | None, opt, sched) -> Tensor:
    """One step; returns the per-sample distances before it, [B, R]."""
    opt.zero_grad(set_to_none=True)
    per_sample = plan.distance(plan.embeds(var), upto=phase)
    per_sample.sum().backward()
    if phase is not None:  # sequential: only this phase's position moves
        assert var.grad is not None  # narrowing: backward() just filled it
        keep = torch.zeros_like(var.grad)
        keep[:, phase - plan.n_fixed] = 1
        var.grad.mul_(keep)
    opt.step()
    sched.step()
    return per_sample.detach().view(plan.batch, plan.restarts)


def optimise(plan: GradientPlan, var: Tensor, opts: GradientOptions, shifted: Tensor | None) -> tuple[list[Tensor], int]:
    """Run the descent; return the per-step [B, R] distances and the number of steps run.

    With `shifted` (stop_when_closer), stop once every prompt's best restart beats it.
    """
    phases = [plan.n_fixed + i for i in range(var.shape[1])] if opts.sequential else [None]
    history: list[Tensor] = []
    bar = tqdm(total=opts.steps * len(phases), desc=f"invert ({plan.method})", disable=not opts.progress, leave=False)
    try:
        for phase in phases:
            opt, sched = _optimizer(var, opts)
            for _ in range(opts.steps):
                history.append(_descend(plan, var, phase, opt, sched))
                bar.update(1)
                last_phase = phase is None or phase == phases[-1]
                if shifted is not None and last_phase and bool((history[-1].min(1).values < shifted).all()):
                    return history, len(history)
    finally:
        bar.close()
    return history, len(history)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decoded:
    """The decoded tokens of the best restart per prompt, and every restart's distances."""

    tokens: Tensor  # [B, P]
    top: Tensor  # [B, P, k]
    embeds: Tensor  # [B, P, d_model] the best restart's continuous input
    best: Tensor  # [B] the index of the best restart
    final: Tensor  # [B, R] the continuous inputs' distances
    decoded_all: Tensor  # [B, R] the decoded tokens' distances
    verdict: InversionVerdict

    @property
    def decoded(self) -> Tensor:
        """[B] the decoded tokens' distance of each prompt's best restart."""
        return self.decoded_all.gather(1, self.best[:, None]).flatten()

    @property
    def distances(self) -> Tensor:
        """[B] the continuous input's distance of each prompt's best restart."""
        return self.final.gather(1, self.best[:, None]).flatten()


def _scores(plan: GradientPlan, var: Tensor, embeds: Tensor, decoding: Literal["pinv", "cosine", "l2", "argmax"]) -> Tensor:
    """Token scores per position of every restart, [B*R, P, d_vocab], disallowed tokens −inf."""
    if decoding != "argmax":
        scores = embedding_scores(plan.table, embeds, decoding=decoding)
    else:
        adapter = plan.adapter
        scores = torch.full((var.shape[0], plan.n_pos, adapter.d_vocab), float("-inf"), device=adapter.device)
        scores[:, plan.n_fixed :, plan.columns if plan.columns is not None else slice(None)] = var
    return mask_scores(scores, plan.mask)


def decode(plan: GradientPlan, var: Tensor, opts: GradientOptions) -> Decoded:
    """Decode every restart, keep the one whose tokens come closest (ties: the closer continuous input)."""
    B, R, bos = plan.batch, plan.restarts, plan.adapter.bos_token_id
    with torch.no_grad():
        embeds = plan.embeds(var.detach())
        final = plan.distance(embeds).view(B, R)
        assert opts.decoding is not None  # narrowing: GradientOptions.checked filled in the default
        scores = _scores(plan, var.detach(), embeds, opts.decoding)
        k = min(opts.top_k, plan.adapter.d_vocab if plan.mask is None else int(plan.mask.sum()))
        top_all = scores.topk(k, dim=-1).indices
        if plan.n_fixed:  # (with none held fixed the slice is empty)
            assert bos is not None  # narrowing: only a BOS is held fixed
            top_all[:, : plan.n_fixed] = bos
        decoded_all = plan.distance(plan.table.embed(top_all[..., 0])).view(B, R)
        tied = decoded_all == decoded_all.min(1, keepdim=True).values
        best = final.masked_fill(~tied, float("inf")).argmin(1)
        pick = torch.arange(B, device=best.device) * R + best
        tokens = top_all[pick][..., 0]
        verdict = _decoded_verdict(plan, tokens)
    return Decoded(tokens=tokens, top=top_all[pick], embeds=embeds[pick], best=best, final=final,
                   decoded_all=decoded_all, verdict=verdict)


def _decoded_verdict(plan: GradientPlan, tokens: Tensor) -> InversionVerdict:
    """Do the decoded tokens reproduce the target? L2 over every target, as the exact search checks."""
    outs, values = plan.outputs(plan.table.embed(tokens)), plan.values
    gap = tensor_sum((o.float() - v.float()).pow(2).flatten(1).sum(1) for o, v in zip(outs, values, strict=True)).sqrt()
    scale = tensor_sum(v.float().pow(2).flatten(1).sum(1) for v in values).sqrt()
    return gradient_verdict(gap.cpu(), scale.cpu(), relative=VERDICT_RELATIVE_TOLERANCE)


def _accuracy(plan: GradientPlan, tokens: Tensor) -> float | None:
    """Fraction of the true tokens recovered, the fixed BOS left out (None without a prompt)."""
    if plan.true is None:
        return None
    n = plan.n_fixed
    return float((tokens[:, n:] == plan.true[:, n:]).float().mean()) if plan.n_pos > n else 1.0


def _trace(plan: GradientPlan, dec: Decoded, history: list[Tensor], steps_run: int) -> GradientTrace:
    """The gradient evidence of the kept restarts, on the CPU."""
    best = dec.best[:, None]
    loss_history = torch.stack([h.gather(1, best.to(h.device)).mean() for h in history]).cpu() if history else None
    k = dec.top.shape[-1]
    return GradientTrace(
        embeddings=dec.embeds.cpu(), top_k_tokens=dec.top.cpu(),
        top_k_texts=[[plan.adapter.decode(dec.top[b, plan.n_fixed :, j].tolist()) for j in range(k)] for b in range(plan.batch)],
        loss_history=loss_history, decoded_distance=float(dec.decoded.mean()), decoded_distances=dec.decoded.cpu(),
        restart_distances=dec.final.cpu(), restart_decoded_distances=dec.decoded_all.cpu(), steps_run=steps_run,
    )


def _result(plan: GradientPlan, opts: GradientOptions, dec: Decoded, trace: GradientTrace, shifted, seconds) -> InversionResult:
    """The InversionResult of a gradient run (every tensor on the CPU)."""
    adapter, tokens, dist = plan.adapter, dec.tokens, dec.distances
    return InversionResult(
        method=opts.method, targets=plan.names, tokens=tokens.cpu(),
        str_tokens=[adapter.token_strings(row) for row in tokens.tolist()],
        texts=[adapter.decode(row[plan.n_fixed :]) for row in tokens.tolist()],
        true_tokens=None if plan.true is None else plan.true.cpu(), token_accuracy=_accuracy(plan, tokens),
        distance=float(dist.mean()), distances=dist.cpu(),
        shifted_distance=None if shifted is None else float(shifted.mean()),
        shifted_distances=None if shifted is None else shifted.cpu(),
        verdict=dec.verdict, seconds=seconds, trace=trace,
        options=dict(loss=opts.loss if isinstance(opts.loss, str) else "callable", optimizer=opts.optimizer,
                     steps=opts.steps, lr=opts.learning_rate, n_restarts=opts.n_restarts, sequential=opts.sequential,
                     seed=opts.seed, start=opts.start, decoding=opts.decoding),
    )


def run_gradient(model, prompt_or_activation, *, target, options: GradientOptions) -> InversionResult:
    """Invert with `options` (checked here): build, start, optimise, decode (see the module docstring)."""
    started = time.perf_counter()
    opts = options.checked()
    adapter = adapter_for(model)
    plan = build(adapter, prompt_or_activation, target, opts)
    var = start(plan, opts)
    shifted = shifted_distances(plan, opts)
    history, steps_run = optimise(plan, var, opts, shifted if opts.stop_when_closer else None)
    dec = decode(plan, var, opts)
    trace = _trace(plan, dec, history, steps_run)
    return _result(plan, opts, dec, trace, shifted, time.perf_counter() - started)


@renamed_options(fix_bos=Rename("include_bos", invert_bool, "include_bos=False holds the BOS fixed"))
@preserves_model
def invert_gradient(
    model, prompt_or_activation, /, *, target: "str | Target | Sequence[str | Target]",
    method: GradientMethod = "embedding", loss: "LossName | object" = "l1", alpha: float = 1.0, beta: float = 1.0,
    steps: int = 200, lr: float | None = None, lr_end_factor: float = 0.1, optimizer: Optimizer = "sgd",
    momentum: float = 0.0, start: Start = "noise", noise_weight: float = 1.0, target_weight: float = 1.0,
    noise_mean: float = 0.5, noise_std: float = 0.05, decoding: Literal["pinv", "cosine", "l2", "argmax"] | None = None,
    allowed_tokens=None, top_k: int = 5, n_restarts: int = 1, shift_std: float = 0.05, stop_when_closer: bool = False,
    sequential: bool = False, embedding_from=None, include_bos: bool = False, n_pos: int | None = None,
    seed: int | None = 0, progress: bool = True,
) -> InversionResult:
    """Invert a target activation by gradient descent on the input (the research's methods).

    `model` is a TransformerLens model; `prompt_or_activation` the prompt(s) to invert or the
    target activation(s) themselves; `target` the target(s) (a list inverts several layers at
    once, distances add up). Returns an `InversionResult` whose `trace` is a `GradientTrace`
    (top-k texts, loss history, restarts); every tensor is on the CPU. The other options
    (from `GradientOptions`):
    """
    options = {name: value for name, value in locals().items() if name in OPTION_NAMES}
    return run_gradient(model, prompt_or_activation, target=target, options=GradientOptions(**options))


def _options_doc() -> str:
    """The Attributes section of `GradientOptions`, as an Args section for `invert_gradient`."""
    text = inspect.getdoc(GradientOptions) or ""
    return "\n\nArgs:" + text.split("Attributes:", 1)[1]


invert_gradient.__doc__ = (inspect.getdoc(invert_gradient) or "") + _options_doc()
GRADIENT_OPTIONS = tuple(
    name for name, p in inspect.signature(invert_gradient).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name not in ("target", "method", "strict")
)
