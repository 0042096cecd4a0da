"""What an attribution explains: the output O, read per output row from a (batched) run.

Four kinds of output, one interface (one of `target`, `answer`, `objective` is given):

- nothing (`target=None`): the next-token logits at the last position (O = the whole logit
  vector, as in the research); gradients use the logit of the predicted token.
- `answer=` a token (id or string): O = that token's logit at the last position.
- `target=` a `Target` (or its string form): O = the target's selected activation; each
  selected token position is one output row; gradients use the sum of the selection.
- `objective=` a callable `fn(logits) -> [batch] or [batch, k]`: O = its value on the full logits.

Before 0.3 `target=` also took a token or a callable; those calls still work (with a
DeprecationWarning) and their error messages keep naming `target=` (`OLD_TARGET`).

In per-output mode a `None` target becomes teacher-forced: one row per position p, whose
token is the prompt's next token (the predicted one at the last position).
"""

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .. import metrics as M
from .._typing import Embeds, Tokens
from ..errors import LensInversionError, OptionError, PromptError, TargetError
from ..hooks.adapter import ModelAdapter
from ..hooks.execution import PrefixState, readout_only, run_after
from ..hooks.sites import Site
from ..hooks.targets import Target, looks_like_target

Outputs = Float[Tensor, "batch row k"]
TargetLike = "None | str | Target"
OCCLUSION_METRICS = ("l1", "kl", "logit_drop", "logprob_drop")
OcclusionMetric = Literal["l1", "kl", "logit_drop", "logprob_drop"]
# True while a call that used the old `target=<token or callable>` runs: messages name `target=`.
OLD_TARGET: ContextVar[bool] = ContextVar("old_target", default=False)


def _name(new: str) -> str:
    """The option the caller used: `new`, or `target` for an old-style call."""
    return "target" if OLD_TARGET.get() else new


def widen(x: Tensor) -> Tensor:
    """float32 for half/bfloat16/float32 activations; float64 kept."""
    return x if x.dtype == torch.float64 else x.float()


@dataclass(frozen=True, kw_only=True)
class Objective:
    """The output being explained, with the rows it is read at."""

    kind: str  # "logits" | "target" | "callable"
    description: str
    rows: list[int]  # positions of the output rows (logits/target); [0] for callables
    main: list[int]  # indices into `rows` that make up the attribution's main output
    row_tokens: list[int] | None = None  # logits kind: the token each row scores
    score_full_vocab: bool = False  # logits kind: O is the whole logit vector (target=None)
    target: Target | None = None
    fn: Callable | None = field(default=None, repr=False)

    @property
    def is_logits(self) -> bool:
        """Whether the explained output is the logits (not a target activation or a callable)."""
        return self.kind == "logits"

    @property
    def _target(self) -> Target:
        assert self.target is not None  # narrowing: an objective of kind "target" has one
        return self.target

    @property
    def _row_tokens(self) -> list[int]:
        assert self.row_tokens is not None  # narrowing: an objective of kind "logits" has them
        return self.row_tokens

    def full(self, adapter: ModelAdapter, tokens: Tokens, embeds: Embeds | None = None) -> Tensor:
        """The tensor O is read from, at every position: the target's activation or the logits."""
        if self.kind == "target" and self._target.site is not Site.LOGITS:
            return adapter.run(tokens, embeds=embeds, capture=[self._target.key])[self._target.key]
        return adapter.run(tokens, embeds=embeds, need_logits=True).require_logits()

    def read(self, full: Tensor) -> Outputs:
        """O from the full tensor: [batch, rows, k]."""
        if self.kind == "target":
            return self._target.select(full)
        if self.kind == "callable":
            value = _call_target(self.fn, full)
            return value.reshape(value.shape[0], 1, -1)
        return full[:, self.rows]

    def outputs(self, adapter: ModelAdapter, tokens: Tokens, embeds: Embeds | None = None) -> Outputs:
        """O for every row of a batch: [batch, rows, k] (k = vocab, features or fn width)."""
        if not self.is_logits:
            return self.read(self.full(adapter, tokens, embeds))
        readout = readout_only(adapter, self.rows)
        logits = adapter.run(tokens, embeds=embeds, hooks=readout, need_logits=True).require_logits()
        if logits.shape[1] != len(self.rows) or not readout:
            logits = logits[:, self.rows]
        return logits

    def clean(self, adapter: ModelAdapter, tokens: Tokens) -> tuple[Outputs, Tensor | None]:
        """O of the unchanged prompt, and (targets, callables) the full tensor it came from."""
        if self.is_logits:
            return self.outputs(adapter, tokens), None
        full = self.full(adapter, tokens)
        return self.read(full), full

    def outputs_after(
        self,
        prefix: PrefixState,
        tokens: Tokens,
        embeds: Embeds | None,
        clean: tuple[Float[Tensor, "one row k"], Tensor | None],
    ) -> Outputs:
        """O for a batch that equals the prompt on the prefix and differs after it.

        Only the positions after `prefix` are run (reusing its keys/values); what lies
        before is causal-invariant and copied from the clean run.
        """
        start, batch = prefix.length, tokens.shape[0]
        clean_out, clean_full = clean
        if not self.is_logits:
            if self.kind == "target" and self._target.site is not Site.LOGITS:
                new = run_after(prefix, tokens, embeds=embeds, capture=[self._target.key])[self._target.key]
            else:
                new = run_after(prefix, tokens, embeds=embeds, need_logits=True).require_logits()
            assert clean_full is not None  # narrowing: `clean` keeps the full tensor of targets and callables
            head = clean_full[:, :start].expand(batch, -1, -1).to(new.dtype)
            return self.read(torch.cat([head, new], dim=1))
        out = clean_out.expand(batch, -1, -1).clone()
        later = [i for i, r in enumerate(self.rows) if r >= start]
        if later:
            relative = [self.rows[i] - start for i in later]
            readout = readout_only(prefix.adapter, relative)
            logits = run_after(prefix, tokens, embeds=embeds, hooks=readout, need_logits=True).require_logits()
            if logits.shape[1] != len(relative) or not readout:
                logits = logits[:, relative]
            out[:, later] = logits.to(out.dtype)
        return out

    @property
    def needs_prediction(self) -> bool:
        """Whether the last row's token is still unknown: target=None scores the model's own prediction."""
        return self.is_logits and self.score_full_vocab and self._row_tokens[-1] < 0

    def with_prediction(self, adapter: ModelAdapter, predicted: int) -> "Objective":
        """The objective with the model's predicted next token filled in (target=None only)."""
        if not self.needs_prediction:
            return self
        label = adapter.token_strings([predicted])[0]
        return replace(
            self,
            row_tokens=[*self._row_tokens[:-1], predicted],
            description=f"{self.description} (predicted {label!r})",
        )

    def scalars(self, outputs: Outputs) -> Float[Tensor, "batch row"]:
        """The scalar per row that gradients are taken of."""
        if self.is_logits:
            index = torch.tensor(self.row_tokens, device=outputs.device)
            return outputs.gather(-1, index[None, :, None].expand(outputs.shape[0], -1, 1))[..., 0]
        return outputs.sum(-1)

    def metric(
        self, metric: str, clean: Float[Tensor, "one row k"], variants: Float[Tensor, "variant row k"]
    ) -> Float[Tensor, "variant row"]:
        """Change of O per variant and row: L1, KL(clean ‖ variant), target logit or log-prob drop."""
        clean, variants = widen(clean), widen(variants)
        if metric == "l1":
            if self.is_logits and not self.score_full_vocab:
                return (self.scalars(variants) - self.scalars(clean)).abs()
            return (variants - clean).abs().sum(-1)
        if metric == "kl":
            return M.kl_divergence(clean, variants)
        if metric == "logprob_drop":
            return self.scalars(M.log_probs(clean)) - self.scalars(M.log_probs(variants))
        return self.scalars(clean) - self.scalars(variants)


def _call_target(fn, full: Tensor) -> Tensor:
    """An objective callable's value on the logits, checked: [batch] or [batch, k] floats."""
    what = _name("objective")
    expected = f"[batch] or [batch, k] float values, batch={full.shape[0]}, for logits of shape {tuple(full.shape)}"
    try:
        value = torch.as_tensor(fn(full))
    except LensInversionError:
        raise
    except Exception as error:
        raise OptionError(f"The {what} callable raised {type(error).__name__}: {error}; it must return {expected}.") from error
    if value.ndim not in (1, 2) or value.shape[0] != full.shape[0] or not value.is_floating_point():
        raise OptionError(
            f"The {what} callable must return {expected}; got shape {tuple(value.shape)} ({value.dtype})."
        )
    return value


def _token_target(adapter: ModelAdapter, answer: "int | str") -> int:
    """A next-token id from an id or a single-token string; a clear error for anything else."""
    name = _name("answer")
    try:
        return adapter.token_id(answer)
    except PromptError as error:
        valid = (f"attribute() explains target=None (the predicted next token) or an activation written in full, "
                 f"such as 'blocks.0.hook_resid_post' (or a li.Target); answer= takes a next-token id in "
                 f"[0, {adapter.d_vocab}) or a single-token string, a callable on the logits goes to objective=")
        if isinstance(answer, str) and parses_as_target(answer):
            raise TargetError(
                f"{name}={answer!r} is neither a next-token id or string nor an activation name attribution reads. "
                f"{valid}: write {str(Target.parse(answer))!r}. To recover the input behind an activation, "
                "use li.invert(model, prompt, target=...)."
            ) from None
        raise TargetError(f"{name}={answer!r} is not a next-token target: {error} {valid}.") from None


def parses_as_target(text: object) -> bool:
    """Whether `text` is a string `Target.parse` reads (short forms such as 'resid_post.1' included)."""
    if not isinstance(text, str):
        return False
    try:
        Target.parse(text)
    except TargetError:
        return False
    return True


def _next_token_objective(tokens: Tokens, *, per_output: bool) -> Objective:
    """target=None: the next-token logits at the last position (or teacher-forced at every position)."""
    n = tokens.shape[1]
    rows = list(range(n)) if per_output else [n - 1]
    row_tokens = tokens[0, 1:].tolist() + [-1] if per_output else [-1]
    return Objective(kind="logits", description=f"next-token logits at position {n - 1}", rows=rows,
                     main=[len(rows) - 1], row_tokens=row_tokens, score_full_vocab=True)


def _target_objective(adapter: ModelAdapter, tokens: Tokens, target) -> Objective:
    """target= an activation: each selected token position is one output row."""
    if not isinstance(target, (str, Target)):
        raise TargetError(
            f"target must be None or a Target (or its string form, e.g. 'blocks.0.hook_resid_post'); got "
            f"{type(target).__name__}. A token goes to answer=, a callable on the logits to objective=."
        )
    resolved = Target.parse(target).resolve(adapter)
    if resolved.batch not in (slice(None), 0, slice(0, 1), slice(None, 1)):
        raise TargetError(f"Attribution explains one prompt; target {target} selects batch {resolved.batch!r}.")
    resolved = Target(site=resolved.site, layer=resolved.layer, tokens=resolved.tokens, features=resolved.features)
    rows = resolved.token_positions(tokens.shape[1])
    return Objective(kind="target", description=str(target), rows=rows, main=list(range(len(rows))), target=resolved)


def _answer_objective(adapter: ModelAdapter, tokens: Tokens, answer) -> Objective:
    """answer= a token: its logit at the last position."""
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise TargetError(f"answer must be None, a token id or a single-token string; got {type(answer).__name__}.")
    token, last = _token_target(adapter, answer), tokens.shape[1] - 1
    label = adapter.token_strings([token])[0]
    return Objective(kind="logits", description=f"logit of {label!r} (id {token}) at position {last}",
                     rows=[last], main=[0], row_tokens=[token])


def build_objective(adapter: ModelAdapter, tokens: Tokens, *, target=None, answer=None, objective=None,
                    per_output: bool) -> Objective:
    """Interpret the user's `target` / `answer` / `objective` (at most one) for a prompt of `tokens` [1, pos].

    For target=None the predicted token is filled in later by `with_prediction`.
    """
    given = [name for name, value in (("target", target), ("answer", answer), ("objective", objective))
             if value is not None]
    if len(given) > 1:
        raise OptionError(f"attribute() explains one output; give one of target=, answer=, objective=; got {given}.")
    if answer is None and objective is None:
        if target is None:
            return _next_token_objective(tokens, per_output=per_output)
        return _target_objective(adapter, tokens, target)
    if per_output:
        raise OptionError("per_output=True needs target=None (teacher-forced next tokens) or a Target.")
    if objective is None:
        return _answer_objective(adapter, tokens, answer)
    if not callable(objective):
        raise OptionError(f"objective must be a callable on the logits; got {type(objective).__name__}.")
    name = getattr(objective, "__name__", type(objective).__name__)
    return Objective(kind="callable", description=f"{name}(logits)", rows=[0], main=[0], fn=objective)


def split_old_target(target) -> dict:
    """The old `target=` value as the new option: a token → answer=, a callable → objective=.

    A Target, its string form (`looks_like_target`) and None stay `target=`; anything else
    that is not a token or callable also stays, so its error names `target=`.
    """
    if callable(target) and not isinstance(target, Target):
        return {"objective": target}
    if isinstance(target, str) and not looks_like_target(target):
        return {"answer": target}
    if isinstance(target, int) and not isinstance(target, bool):
        return {"answer": target}
    return {"target": target}
