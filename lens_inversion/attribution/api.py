"""The public door: `attribute(model, prompt, method=...)`."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..bos import first_content_position
from ..deprecation import renamed_options, warn_renamed
from ..errors import OptionError, PromptError, check_choice
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.execution import REUSE
from ..hooks.preserve import preserves_model
from ..hooks.targets import Target
from ..validation import check_bool, check_int, read_prompt, validates_own_arguments
from .combined import DEFAULT_WEIGHTS, NORMALIZE, check_weights, combine, max_abs, normalise, rank_agreement
from .grad_x_input import grad_x_input_rows, grad_x_input_scores
from .objective import OCCLUSION_METRICS, OLD_TARGET, Objective, OcclusionMetric, build_objective, parses_as_target, split_old_target, widen
from .occlusion import Baseline, occlusion_values, resolve_baseline, spread_windows, windows_for
from .result import AttributionResult

METHODS = ("grad_x_input", "occlusion", "combined")
Method = Literal["grad_x_input", "occlusion", "combined"]
Normalize = Literal["max_abs", "none"]
Reuse = Literal["auto", "cache", "recompute"]
# Per-output gradient × input: about this many token rows (copies × prompt length) per
# backward pass, so the activations kept for the backward stay bounded.
GRAD_TOKENS_PER_CHUNK = 512


@validates_own_arguments  # built from raw user values, then checked
@dataclass(frozen=True, kw_only=True)
class AttributionSpec:
    """The options of an `attribute` call that `faithfulness` reuses."""

    target: "None | str | Target"
    baseline: "str | int"
    include_bos: bool
    answer: "int | str | None" = None
    objective: "Callable | None" = None


@dataclass(frozen=True, kw_only=True)
class Setup:
    """A tokenized single prompt with its attributed positions."""

    adapter: ModelAdapter
    tokens: Tensor  # [1, pos]
    str_tokens: list[str]
    mask: Tensor  # [pos] bool, attributed positions


def prepare(model, prompt, *, include_bos: bool) -> Setup:
    """Tokenize one prompt and find the positions to attribute (`lens_inversion.bos`)."""
    adapter = adapter_for(model)
    batch = read_prompt(adapter, prompt)
    if batch.batch != 1:
        raise PromptError(f"attribute() explains one prompt at a time; got a batch of {batch.batch}.")
    tokens = batch.tokens
    n = tokens.shape[1]
    first = first_content_position(tokens[0], adapter.bos_token_id, include_bos=include_bos)
    if first >= n:
        raise PromptError("The prompt has no token to attribute besides BOS; give some text.")
    return Setup(adapter=adapter, tokens=tokens, str_tokens=batch.str_tokens[0], mask=torch.arange(n) >= first)


def predict(adapter: ModelAdapter, tokens: Tensor) -> int:
    """The model's top next token after the prompt (one clean forward)."""
    with torch.no_grad():
        return int(adapter.run(tokens, need_logits=True).require_logits()[0, -1].argmax())


@dataclass(frozen=True, kw_only=True)
class AttributionPlan:
    """A checked `attribute` call: the prompt, the output explained and how it is scored."""

    setup: Setup
    objective: Objective
    method: str
    metric: str
    normalize: str
    signed: bool
    per_output: bool
    window: int
    spans: list[tuple[int, int]]
    baseline: Baseline
    weights: tuple[float, float]
    batch_size: int | None
    reuse: str
    progress: bool
    spec: AttributionSpec

    @property
    def grads(self) -> bool:
        """Whether the method needs gradient × input scores (grad_x_input and combined)."""
        return self.method in ("grad_x_input", "combined")

    @property
    def occludes(self) -> bool:
        """Whether the method needs occlusion runs (occlusion and combined)."""
        return self.method in ("occlusion", "combined")


def _check_flags(method, metric, normalize, reuse, batch_size, **flags) -> None:
    check_choice("method", method, METHODS)
    check_choice("metric", metric, OCCLUSION_METRICS)
    check_choice("normalize", normalize, NORMALIZE)
    check_choice("reuse", reuse, REUSE)
    check_int("batch_size", batch_size, low=1, allow_none=True)
    for name, value in flags.items():
        check_bool(name, value)


def plan_attribution(model, prompt, *, method, target, answer, objective, baseline, metric, window, signed,
                     normalize, include_bos, per_output, weights, batch_size, reuse, progress) -> AttributionPlan:
    """Check every option, tokenize the prompt and build the objective (nothing is attributed yet)."""
    _check_flags(method, metric, normalize, reuse, batch_size, signed=signed, per_output=per_output,
                 include_bos=include_bos, progress=progress)
    setup = prepare(model, prompt, include_bos=include_bos)
    adapter, tokens = setup.adapter, setup.tokens
    explained = build_objective(adapter, tokens, target=target, answer=answer, objective=objective,
                                per_output=per_output)
    if metric != "l1" and not explained.is_logits:
        raise OptionError(
            f"metric={metric!r} compares next-token distributions; it needs target=None or a token (answer=). "
            f"For {explained.description} use metric='l1'."
        )
    positions = [int(p) for p in torch.nonzero(setup.mask)[:, 0]]
    spec = AttributionSpec(target=target, answer=answer, objective=objective, baseline=baseline,
                           include_bos=include_bos)
    return AttributionPlan(
        setup=setup, objective=explained, method=method, metric=metric, normalize=normalize, signed=signed,
        per_output=per_output, window=window, spans=windows_for(positions, window, tokens.shape[1]),
        baseline=resolve_baseline(adapter, baseline), weights=check_weights(weights), batch_size=batch_size,
        reuse=reuse, progress=progress, spec=spec,
    )


def _gradient_scores(plan: AttributionPlan) -> tuple[dict, dict, int, Objective]:
    """Gradient × input (when the method uses it), the model's prediction and the completed objective."""
    adapter, tokens, objective = plan.setup.adapter, plan.setup.tokens, plan.objective
    raw, matrix, predicted = {}, {}, None
    if plan.grads:
        raw["grad_x_input"], predicted, objective = grad_x_input_scores(adapter, tokens, objective, signed=plan.signed)
    if predicted is None:
        predicted = predict(adapter, tokens)
        objective = objective.with_prediction(adapter, predicted)
    if plan.grads and plan.per_output:
        size = plan.batch_size or max(1, GRAD_TOKENS_PER_CHUNK // tokens.shape[1])
        matrix["grad_x_input"] = grad_x_input_rows(
            adapter, tokens, objective, signed=plan.signed, batch_size=size, progress=plan.progress
        )
    return raw, matrix, predicted, objective


def _occlusion_scores(plan: AttributionPlan, objective: Objective, raw: dict, matrix: dict) -> None:
    """Occlusion scores (when the method uses it), added to `raw` and `matrix`."""
    if not plan.occludes:
        return
    tokens = plan.setup.tokens
    values = occlusion_values(
        plan.setup.adapter, tokens, objective, spans=plan.spans, baseline=plan.baseline, metric=plan.metric,
        batch_size=plan.batch_size, reuse=plan.reuse, progress=plan.progress,
    )
    rows = spread_windows(values, plan.spans, tokens.shape[1])
    raw["occlusion"] = rows[objective.main].sum(0)
    if plan.per_output:
        matrix["occlusion"] = rows


def _result(plan: AttributionPlan, objective: Objective, predicted: int, raw: dict, matrix: dict) -> AttributionResult:
    """The scores of the method (combined: the weighted sum and the agreement), normalized as asked."""
    mask, adapter = plan.setup.mask, plan.setup.adapter
    raw = {k: torch.where(mask, widen(v), torch.zeros_like(widen(v))) for k, v in raw.items()}
    matrix = {k: torch.where(mask, widen(v), torch.zeros_like(widen(v))) for k, v in matrix.items()}
    combined, occludes = plan.method == "combined", plan.occludes
    if combined:
        raw_scores = combine(raw["grad_x_input"], raw["occlusion"], mask, plan.weights)
        raw_matrix = combine(matrix["grad_x_input"], matrix["occlusion"], mask, plan.weights) if plan.per_output else None
    else:
        raw_scores, raw_matrix = raw[plan.method], matrix.get(plan.method)
    return AttributionResult(
        scores=normalise(raw_scores, mask, plan.normalize), raw_scores=raw_scores, str_tokens=plan.setup.str_tokens,
        tokens=plan.setup.tokens[0].cpu(), attributed=mask, method=plan.method, target=objective.description,
        predicted_token=adapter.token_strings([predicted])[0], predicted_token_id=predicted,
        normalize=plan.normalize, signed=plan.signed, metric=plan.metric if occludes else None,
        baseline=plan.baseline.name if occludes else None, window=plan.window if occludes else None,
        weights=plan.weights if combined else None,
        agreement=rank_agreement(raw["grad_x_input"], raw["occlusion"], mask) if combined else None,
        components={k: max_abs(v, mask) for k, v in raw.items()} if combined else None,
        matrix=None if raw_matrix is None else normalise(raw_matrix, mask, plan.normalize), raw_matrix=raw_matrix,
        output_positions=list(objective.rows) if plan.per_output else None, spec=plan.spec,
    )


def _accepts_old_target(function: Callable) -> Callable:
    """Keep `target=<token>` (now answer=) and `target=<callable>` (now objective=) working for one release."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        new = split_old_target(kwargs.get("target"))
        if "target" in new:
            return function(*args, **kwargs)
        ((name, value),) = new.items()
        if kwargs.get(name) is not None:
            raise OptionError(f"attribute() got {name}= and the old target= for the same thing; give only {name}=.")
        if not parses_as_target(value):  # an activation's short form is refused below, not a renamed token
            warn_renamed("target", name, note=f"target= is only the activation now; a {'callable' if name == 'objective' else 'token'} "
                         f"is {name}=")
        kwargs = {**{k: v for k, v in kwargs.items() if k != "target"}, name: value}
        old = OLD_TARGET.set(True)
        try:
            return function(*args, **kwargs)
        finally:
            OLD_TARGET.reset(old)

    return wrapper


@renamed_options(chunk_size="batch_size")
@_accepts_old_target
@preserves_model
def attribute(
    model, prompt, /, *, method: Method = "grad_x_input", target: "None | str | Target" = None,
    answer: "int | str | None" = None, objective: "Callable | None" = None, baseline: "str | int" = "pad",
    metric: OcclusionMetric = "l1", window: int = 1, signed: bool = False, normalize: Normalize = "max_abs",
    include_bos: bool = False, per_output: bool = False, weights: tuple[float, float] = DEFAULT_WEIGHTS,
    batch_size: int | None = None, reuse: Reuse = "auto", progress: bool = True,
) -> AttributionResult:
    """Attribute an output to each input token by gradient × input, occlusion, or both.

    Args:
        model: a TransformerLens model (TransformerBridge or HookedTransformer).
        prompt: one string or a token tensor [pos] / [1, pos].
        method: "grad_x_input" (Σ_d ∂O/∂a·a per token), "occlusion" (change of O when the
            token is replaced by `baseline`) or "combined" (w_g·ĝ + w_o·ô, with agreement).
        target: the activation explained, a `Target` or its string form; None: the
            next-token logits at the last position (unless `answer` or `objective`).
        answer: a token (id or string) whose next-token logit is explained.
        objective: a callable `fn(logits [batch, pos, vocab]) -> [batch] | [batch, k]` explained.
        baseline: occlusion filler: "pad" | "eos" | "bos" token, "zero" | "mean" embedding, or a token id.
        metric: occlusion change: "l1" (‖ΔO‖₁), "kl" (KL(clean ‖ occluded)), "logit_drop" or
            "logprob_drop" (clean − occluded logit / log-probability of the scored token; signed).
        window: occlude `window` consecutive tokens from each position (a token's score is
            the mean over the windows that cover it).
        signed: gradient × input keeps its sign (Σ g·a) instead of Σ |g·a|.
        normalize: "max_abs" (divide by the largest |score|) or "none".
        include_bos: attribute to the BOS token too.
        per_output: also the [output position × input position] matrix (target None:
            teacher-forced next tokens at every position; a Target: each selected position).
        weights: (w_grad, w_occlusion) for "combined".
        batch_size: variants (or gradient copies) per forward; None picks a bounded size.
        reuse: occlusion reuses the clean prefix's keys/values where the model has a cache
            ("auto"), must ("cache") or never does ("recompute").
        progress: show tqdm bars.

    Returns:
        An AttributionResult (`.scores`, `.plot()`, `.to_html(path)`). Raises OptionError,
        TargetError or PromptError for bad options, target or prompt. Deprecated:
        `chunk_size=` (batch_size=), `target=<token>` (answer=), `target=<callable>` (objective=).
    """
    plan = plan_attribution(model, prompt, method=method, target=target, answer=answer, objective=objective,
                            baseline=baseline, metric=metric, window=window, signed=signed, normalize=normalize,
                            include_bos=include_bos, per_output=per_output, weights=weights, batch_size=batch_size,
                            reuse=reuse, progress=progress)
    raw, matrix, predicted, explained = _gradient_scores(plan)
    _occlusion_scores(plan, explained, raw, matrix)
    return _result(plan, explained, predicted, raw, matrix)
