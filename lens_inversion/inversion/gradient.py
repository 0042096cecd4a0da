"""Gradient-descent input inversion, as in the research.

On the input embedding ("embedding", decoded by the pseudoinverse of W_E) or on a
token-space vector x ("direct", x @ W_E enters the model). Restarts run together in the
batch dimension.
"""

import dataclasses
import time
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import OptionError, PromptError
from ..hooks import Target, adapter_for, preserves_model
from ..hooks.targets import index_positions
from ..validation import check_bool, check_choice, check_int, check_number, check_seed
from .decode import DECODINGS, EmbeddingTable, allowed_mask, embedding_scores, mask_scores
from .losses import LossName, loss_function, total_distance
from .observed import as_targets, observe
from .result import InversionResult, InversionVerdict, gradient_verdict

GRADIENT_OPTIONS = (
    "loss", "alpha", "beta", "steps", "lr", "lr_end_factor", "optimizer", "momentum", "start", "noise_weight",
    "target_weight", "noise_mean", "noise_std", "decoding", "allowed_tokens", "top_k", "n_restarts", "shift_std",
    "stop_when_closer", "sequential", "embedding_from", "fix_bos", "n_pos", "seed", "progress",
)
DEFAULT_LR = {"sgd": 20.0, "adam": 0.05}


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Problem:
    """Everything the optimisation loop needs, fixed before it starts."""

    adapter: object
    targets: tuple[Target, ...]  # batch slice dropped: restarts live in the batch axis
    values: tuple[Tensor, ...]  # [B*R, tokens, features], repeated per restart
    table: EmbeddingTable
    method: str
    n_fixed: int  # leading positions held fixed (the BOS)
    prefix: Tensor  # [1, n_fixed, d_model] their embeddings
    columns: Tensor | None  # direct method: the allowed token ids (x's last axis)
    loss_fn: object

    def embeds(self, var: Tensor) -> Tensor:
        e = var if self.method == "embedding" else self.table.from_token_space(var, self.columns)
        return torch.cat([self.prefix.expand(e.shape[0], -1, -1), e], dim=1)

    def outputs(self, embeds: Tensor) -> list[Tensor]:
        capture = self.adapter.run(embeds=embeds, capture=[t.key for t in self.targets])
        return [t.select(capture[t.key]) for t in self.targets]

    def distance(self, embeds: Tensor, upto: int | None = None) -> Tensor:
        outs, vals = self.outputs(embeds), self.values
        if upto is not None:  # sequential: only the observed positions <= upto
            pairs = [_upto(t, o, v, embeds.shape[1], upto) for t, o, v in zip(self.targets, outs, vals, strict=True)]
            outs, vals = [p[0] for p in pairs], [p[1] for p in pairs]
        return total_distance(self.loss_fn, outs, vals)


def _upto(target: Target, out: Tensor, val: Tensor, n_pos: int, upto: int) -> tuple[Tensor, Tensor]:
    keep = [i for i, p in enumerate(target.token_positions(n_pos)) if p <= upto]
    if not keep:
        return out, val
    return out[:, keep], val[:, keep]


MAX_RESTARTS = 4096  # restarts run side by side in the batch axis: a memory bound, not a tuning knob


def _check(options: dict) -> None:
    """Check every number and flag of `invert_gradient` before anything runs (see validation)."""
    for name in ("steps", "top_k"):
        check_int(name, options[name], low=1)
    check_int("n_restarts", options["n_restarts"], low=1, high=MAX_RESTARTS)
    check_int("n_pos", options["n_pos"], low=1, allow_none=True)
    check_number("lr", options["lr"], low=0, low_open=True, allow_none=True, none_means="for the optimizer's default")
    check_number("lr_end_factor", options["lr_end_factor"], low=0, high=1, low_open=True)
    for name in ("noise_std", "shift_std", "alpha", "beta"):
        check_number(name, options[name], low=0)
    check_number("momentum", options["momentum"], low=0, high=1, high_open=True)
    for name in ("noise_mean", "noise_weight", "target_weight"):
        check_number(name, options[name])
    for name in ("stop_when_closer", "sequential", "fix_bos", "progress"):
        check_bool(name, options[name])
    check_seed(options["seed"])


@preserves_model
def invert_gradient(
    model,
    prompt_or_activation,
    /,
    *,
    target: "str | Target | Sequence[str | Target]",
    method: Literal["embedding", "direct"] = "embedding",
    loss: "LossName | object" = "l1",
    alpha: float = 1.0,
    beta: float = 1.0,
    steps: int = 200,
    lr: float | None = None,
    lr_end_factor: float = 0.1,
    optimizer: Literal["sgd", "adam"] = "sgd",
    momentum: float = 0.0,
    start: Literal["noise", "mixed"] = "noise",
    noise_weight: float = 1.0,
    target_weight: float = 1.0,
    noise_mean: float = 0.5,
    noise_std: float = 0.05,
    decoding: Literal["pinv", "cosine", "l2", "argmax"] | None = None,
    allowed_tokens=None,
    top_k: int = 5,
    n_restarts: int = 1,
    shift_std: float = 0.05,
    stop_when_closer: bool = False,
    sequential: bool = False,
    embedding_from=None,
    fix_bos: bool = True,
    n_pos: int | None = None,
    seed: int | None = 0,
    progress: bool = True,
) -> InversionResult:
    """Invert a target activation by gradient descent on the input (the research's methods).

    Args:
        model: a TransformerLens model.
        prompt_or_activation: prompt(s) to invert, or the target activation(s) themselves.
        target: target(s); a list inverts several layers at once (distances add up).
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
        fix_bos: hold position 0 at the BOS embedding when the model has a BOS token.
        n_pos: length of the hidden input for raw activations with a token slice.
        seed: seed of the start noise and of the shift (None: unseeded).
        progress: show a progress bar.

    Returns:
        `InversionResult` with tokens, texts, top-k texts, distances and loss history.
    """
    started = time.perf_counter()
    check_choice("method", method, ("embedding", "direct"))
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    check_choice("start", start, ("noise", "mixed"))
    if decoding is None:
        decoding = "pinv" if method == "embedding" else "argmax"
    check_choice("decoding", decoding, DECODINGS + (("argmax",) if method == "direct" else ()))
    _check(locals())
    adapter = adapter_for(model)
    loss_fn = loss_function(loss, alpha=alpha, beta=beta)
    targets = as_targets(adapter, target)
    table = EmbeddingTable.of(adapter if embedding_from is None else embedding_from)
    if tuple(table.W_E.shape) != (adapter.d_vocab, adapter.d_model):
        raise OptionError(
            f"embedding_from has W_E of shape {tuple(table.W_E.shape)} but this model needs "
            f"{(adapter.d_vocab, adapter.d_model)}."
        )
    table = dataclasses.replace(table, W_E=table.W_E.to(adapter.device))
    if len({str(t.batch) for t in targets}) > 1:
        raise OptionError(f"All targets must select the same batch rows; got {[str(t) for t in targets]}.")
    obs = observe(adapter, prompt_or_activation, targets, n_pos=n_pos)
    true = obs.true_tokens
    if true is not None:  # the rows the targets' batch index keeps
        true = true[index_positions(targets[0].batch, true.shape[0], "batch")]
    values = obs.values
    if embedding_from is not None and true is not None:
        with torch.no_grad():
            capture = adapter.run(embeds=table.embed(true), capture=[t.key for t in targets])
        values = tuple(t.select(capture[t.key]).detach().float() for t in targets)
    if start == "mixed" and true is None:
        raise PromptError("start='mixed' mixes in the true input, so give a prompt rather than an activation.")
    mask = allowed_mask(adapter, allowed_tokens)
    B, P, R = obs.batch, obs.n_pos, n_restarts
    bos = adapter.bos_token_id
    n_fixed = int(fix_bos and bos is not None and P > 1 and (true is None or bool((true[:, 0] == bos).all())))
    if n_fixed and P == 1:
        n_fixed = 0
    columns = None if mask is None or method == "embedding" else mask.nonzero().flatten()
    bare = tuple(dataclasses.replace(t, batch=slice(None)) for t in targets)
    problem = _Problem(
        adapter=adapter, targets=bare, values=tuple(v.repeat_interleave(R, 0) for v in values), table=table,
        method=method, n_fixed=n_fixed, prefix=table.embed(torch.full((1, n_fixed), bos or 0, dtype=torch.long)),
        columns=columns, loss_fn=loss_fn,
    )
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    width = adapter.d_model if method == "embedding" else (adapter.d_vocab if columns is None else len(columns))
    shape = (B * R, P - n_fixed, width)
    var = torch.normal(noise_mean, noise_std, shape, generator=gen).to(adapter.device)
    if start == "mixed":
        truth = _true_input(problem, true[:, n_fixed:], adapter.d_vocab).repeat_interleave(R, 0)
        var = noise_weight * var + target_weight * truth
    var.requires_grad_(True)
    shifted = None
    if true is not None:
        e_true = table.embed(true)
        noise = torch.normal(0.0, shift_std, e_true[:, n_fixed:].shape, generator=gen).to(adapter.device)
        with torch.no_grad():
            e_shift = torch.cat([e_true[:, :n_fixed], e_true[:, n_fixed:] + noise], 1)
            shifted = total_distance(loss_fn, problem.outputs(e_shift), values)

    history, steps_run = _optimise(
        problem, var, steps=steps, lr=lr or DEFAULT_LR[optimizer], lr_end_factor=lr_end_factor, optimizer=optimizer,
        momentum=momentum, sequential=sequential, shifted=shifted if stop_when_closer else None, B=B, R=R,
        progress=progress,
    )
    with torch.no_grad():
        embeds = problem.embeds(var.detach())
        final = problem.distance(embeds).view(B, R)
        if decoding != "argmax":
            scores = embedding_scores(table, embeds, decoding=decoding)
        else:
            scores = torch.full((B * R, P, adapter.d_vocab), float("-inf"), device=adapter.device)
            scores[:, n_fixed:, columns if columns is not None else slice(None)] = var.detach()
        scores = mask_scores(scores, mask)
        k = min(top_k, adapter.d_vocab if mask is None else int(mask.sum()))
        top_all = scores.topk(k, dim=-1).indices
        top_all[:, :n_fixed] = bos if n_fixed else 0
        decoded_all = problem.distance(table.embed(top_all[..., 0])).view(B, R)
        # the best restart decodes closest; ties go to the closer continuous input
        tied = decoded_all == decoded_all.min(1, keepdim=True).values
        best = final.masked_fill(~tied, float("inf")).argmin(1)
        pick = torch.arange(B, device=best.device) * R + best
        best_embeds, top = embeds[pick], top_all[pick]
        tokens = top[..., 0]
        decoded = decoded_all.gather(1, best[:, None]).flatten()
        verdict = _decoded_verdict(problem, tokens, values)
    loss_history = torch.stack([h.gather(1, best[:, None].to(h.device)).mean() for h in history]) if history else None
    accuracy = None
    if true is not None:
        accuracy = float((tokens[:, n_fixed:] == true[:, n_fixed:]).float().mean()) if P > n_fixed else 1.0
    dist = final.gather(1, best[:, None]).flatten()
    return InversionResult(
        method=method,
        targets=tuple(str(t) for t in targets),
        tokens=tokens.cpu(),
        str_tokens=[adapter.token_strings(row) for row in tokens.tolist()],
        top_k_tokens=top.cpu(),
        top_k_texts=[[adapter.decode(top[b, n_fixed:, j].tolist()) for j in range(k)] for b in range(B)],
        true_tokens=None if true is None else true.cpu(),
        token_accuracy=accuracy,
        loss_history=loss_history.cpu() if loss_history is not None else None,
        distance=float(dist.mean()),
        shifted_distance=None if shifted is None else float(shifted.mean()),
        seconds=time.perf_counter() - started,
        texts=[adapter.decode(row[n_fixed:]) for row in tokens.tolist()],
        embeddings=best_embeds.cpu(),
        distances=dist.cpu(),
        shifted_distances=None if shifted is None else shifted.cpu(),
        decoded_distance=float(decoded.mean()),
        decoded_distances=decoded.cpu(),
        restart_distances=final.cpu(),
        restart_decoded_distances=decoded_all.cpu(),
        steps_run=steps_run,
        verdict=verdict,
        options=dict(
            loss=loss if isinstance(loss, str) else "callable", optimizer=optimizer, steps=steps,
            lr=lr or DEFAULT_LR[optimizer], n_restarts=R, sequential=sequential, seed=seed, start=start,
            decoding=decoding,
        ),
    )


def _decoded_verdict(problem: _Problem, tokens: Tensor, values: Sequence[Tensor]) -> InversionVerdict:
    """Do the decoded tokens reproduce the target? L2 over every target, as the exact search checks."""
    outs = problem.outputs(problem.table.embed(tokens))
    gap = sum((o.float() - v.float()).pow(2).flatten(1).sum(1) for o, v in zip(outs, values, strict=True)).sqrt()
    scale = sum(v.float().pow(2).flatten(1).sum(1) for v in values).sqrt()
    return gradient_verdict(gap.cpu(), scale.cpu(), relative=1e-4)


def _true_input(problem: _Problem, tokens: Tensor, d_vocab: int) -> Tensor:
    """The true input in the optimised space: embeddings, or one-hot rows over x's columns."""
    if problem.method == "embedding":
        return problem.table.embed(tokens)
    onehot = torch.nn.functional.one_hot(tokens, d_vocab).float()
    return onehot if problem.columns is None else onehot[..., problem.columns]


def _optimise(problem, var, *, steps, lr, lr_end_factor, optimizer, momentum, sequential, shifted, B, R, progress):
    """Run the descent; return the per-step [B, R] distances and the number of steps run."""
    free = var.shape[1]
    phases = [problem.n_fixed + i for i in range(free)] if sequential else [None]
    history: list[Tensor] = []
    bar = tqdm(total=steps * len(phases), desc=f"invert ({problem.method})", disable=not progress, leave=False)
    run = 0
    try:
        for phase in phases:
            opt = (torch.optim.SGD([var], lr=lr, momentum=momentum) if optimizer == "sgd"
                   else torch.optim.Adam([var], lr=lr))
            sched = torch.optim.lr_scheduler.LinearLR(
                opt, start_factor=1.0, end_factor=lr_end_factor, total_iters=steps
            )
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                per_sample = problem.distance(problem.embeds(var), upto=phase)
                per_sample.sum().backward()
                if phase is not None:
                    keep = torch.zeros_like(var.grad)
                    keep[:, phase - problem.n_fixed] = 1
                    var.grad.mul_(keep)
                opt.step()
                sched.step()
                run += 1
                bar.update(1)
                now = per_sample.detach().view(B, R)
                history.append(now)
                last_phase = phase is None or phase == phases[-1]
                if shifted is not None and last_phase and bool((now.min(1).values < shifted).all()):
                    return history, run
    finally:
        bar.close()
    return history, run
