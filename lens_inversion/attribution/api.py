"""The public door: `attribute(model, prompt, method=...)`."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import OptionError, PromptError, check_choice
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.execution import REUSE
from ..hooks.preserve import preserves_model
from ..hooks.targets import Target
from ..validation import read_prompt
from .combined import DEFAULT_WEIGHTS, NORMALISATIONS, check_weights, combine, max_abs, normalise, rank_agreement
from .grad_x_input import grad_x_input_rows, grad_x_input_scores
from .objective import OCCLUSION_METRICS, Objective, build_objective, widen
from .occlusion import check_chunk, occlusion_values, resolve_baseline, spread_windows, windows_for
from .result import AttributionResult

METHODS = ("grad_x_input", "occlusion", "combined")
Method = Literal["grad_x_input", "occlusion", "combined"]
GRAD_TOKENS_PER_CHUNK = 512


@dataclass(frozen=True, kw_only=True)
class AttributionSpec:
    """The options of an `attribute` call that `faithfulness` reuses."""

    target: "None | int | str | Target | Callable"
    baseline: "str | int"
    include_bos: bool


@dataclass(frozen=True, kw_only=True)
class Setup:
    """A tokenized single prompt with its attributed positions."""

    adapter: ModelAdapter
    tokens: Tensor  # [1, pos]
    str_tokens: list[str]
    mask: Tensor  # [pos] bool, attributed positions


def prepare(model, prompt, *, include_bos: bool) -> Setup:
    """Tokenize one prompt and find the positions to attribute."""
    adapter = adapter_for(model)
    batch = read_prompt(adapter, prompt)
    if batch.batch != 1:
        raise PromptError(f"attribute() explains one prompt at a time; got a batch of {batch.batch}.")
    tokens = batch.tokens
    n = tokens.shape[1]
    bos = adapter.bos_token_id
    first = 1 if not include_bos and bos is not None and int(tokens[0, 0]) == bos else 0
    if first >= n:
        raise PromptError("The prompt has no token to attribute besides BOS; give some text.")
    return Setup(adapter=adapter, tokens=tokens, str_tokens=batch.str_tokens[0], mask=torch.arange(n) >= first)


def predict(adapter: ModelAdapter, tokens: Tensor) -> int:
    """The model's top next token after the prompt (one clean forward)."""
    with torch.no_grad():
        return int(adapter.run(tokens, need_logits=True).logits[0, -1].argmax())


def _check_options(objective: Objective, method, metric, normalize, signed, per_output, include_bos, progress) -> None:
    check_choice("method", method, METHODS)
    check_choice("metric", metric, OCCLUSION_METRICS)
    check_choice("normalize", normalize, NORMALISATIONS)
    for name, value in (
        ("signed", signed),
        ("per_output", per_output),
        ("include_bos", include_bos),
        ("progress", progress),
    ):
        if not isinstance(value, bool):
            raise OptionError(f"{name} must be True or False; got {value!r}.")
    if metric != "l1" and not objective.is_logits:
        raise OptionError(
            f"metric={metric!r} compares next-token distributions; it needs target=None or a token. "
            f"For target {objective.description} use metric='l1'."
        )


@preserves_model
def attribute(
    model,
    prompt,
    /,
    *,
    method: Method = "grad_x_input",
    target: "None | int | str | Target | Callable" = None,
    baseline: "str | int" = "pad",
    metric: Literal["l1", "kl", "logit_drop", "logprob_drop"] = "l1",
    window: int = 1,
    signed: bool = False,
    normalize: Literal["max_abs", "none"] = "max_abs",
    include_bos: bool = False,
    per_output: bool = False,
    weights: tuple[float, float] = DEFAULT_WEIGHTS,
    chunk_size: int | None = None,
    reuse: Literal["auto", "cache", "recompute"] = "auto",
    progress: bool = True,
) -> AttributionResult:
    """Attribute an output to each input token by gradient × input, occlusion, or both.

    Args:
        model: a TransformerLens model (TransformerBridge or HookedTransformer).
        prompt: one string or a token tensor [pos] / [1, pos].
        method: "grad_x_input" (Σ_d ∂O/∂a·a per token, one forward + backward),
            "occlusion" (change of O when the token is replaced by `baseline`, batched) or
            "combined" (w_g·ĝ + w_o·ô of the max-abs normalised scores, with agreement).
        target: None (next-token logits at the last position), a token id or string (its
            logit), a `Target` or its string form (the selected activation), or a callable
            `fn(logits [batch, pos, vocab]) -> [batch] | [batch, k]`.
        baseline: occlusion filler: "pad" | "eos" | "bos" token, "zero" | "mean" embedding,
            or a token id.
        metric: occlusion change: "l1" (‖ΔO‖₁), "kl" (KL(clean ‖ occluded), logits targets)
            "logit_drop" or "logprob_drop" (clean − occluded logit / log-probability of the
            target token; signed; "logprob_drop" is captum's LLMAttribution measure).
        window: occlude `window` consecutive tokens from each position; a token's score is
            the mean over the windows that cover it.
        signed: gradient × input keeps its sign (Σ g·a) instead of Σ |g·a|.
        normalize: "max_abs" (divide by the largest |score|) or "none".
        include_bos: attribute to the BOS token too.
        per_output: also the [output position × input position] matrix (target None:
            teacher-forced next tokens at every position; a Target: each selected position).
        weights: (w_grad, w_occlusion) for "combined".
        chunk_size: variants (or gradient copies) per forward; None picks a bounded size.
        reuse: occlusion reuses the clean prefix's keys/values where the model has a cache
            ("auto"), must ("cache") or never does ("recompute": full batched forwards).
        progress: show tqdm bars.

    Returns:
        An AttributionResult (`.scores`, `.plot()`, `.to_html(path)`).

    Raises:
        OptionError, TargetError, PromptError: bad options, target or prompt.

    Examples:
        >>> attr = li.attribute(model, "The sky is blue. The grass is", method="occlusion")  # doctest: +SKIP
        >>> attr.top(3)  # doctest: +SKIP
    """
    check_chunk(chunk_size)
    check_choice("reuse", reuse, REUSE)
    setup = prepare(model, prompt, include_bos=include_bos)
    adapter, tokens, mask = setup.adapter, setup.tokens, setup.mask
    objective = build_objective(adapter, tokens, target, per_output=per_output)
    _check_options(objective, method, metric, normalize, signed, per_output, include_bos, progress)
    weights = check_weights(weights)
    n = tokens.shape[1]
    positions = [int(p) for p in torch.nonzero(mask)[:, 0]]
    spans = windows_for(positions, window, n)
    base = resolve_baseline(adapter, baseline)

    raw, matrix, parts = {}, {}, {}
    predicted = None
    if method in ("grad_x_input", "combined"):
        raw["grad_x_input"], predicted, objective = grad_x_input_scores(adapter, tokens, objective, signed=signed)
    if predicted is None:
        predicted = predict(adapter, tokens)
        objective = objective.with_prediction(adapter, predicted)
    if method in ("grad_x_input", "combined"):
        if per_output:
            size = chunk_size or max(1, GRAD_TOKENS_PER_CHUNK // n)
            matrix["grad_x_input"] = grad_x_input_rows(
                adapter, tokens, objective, signed=signed, chunk_size=size, progress=progress
            )
    if method in ("occlusion", "combined"):
        values = occlusion_values(
            adapter,
            tokens,
            objective,
            spans=spans,
            baseline=base,
            metric=metric,
            chunk_size=chunk_size,
            reuse=reuse,
            progress=progress,
        )
        rows = spread_windows(values, spans, n)
        raw["occlusion"] = rows[objective.main].sum(0)
        if per_output:
            matrix["occlusion"] = rows
    raw = {k: torch.where(mask, widen(v), torch.zeros_like(widen(v))) for k, v in raw.items()}
    matrix = {k: torch.where(mask, widen(v), torch.zeros_like(widen(v))) for k, v in matrix.items()}

    combined = method == "combined"
    if combined:
        parts = {k: max_abs(v, mask) for k, v in raw.items()}
        raw_scores = combine(raw["grad_x_input"], raw["occlusion"], mask, weights)
        raw_matrix = combine(matrix["grad_x_input"], matrix["occlusion"], mask, weights) if per_output else None
    else:
        raw_scores, raw_matrix = raw[method], matrix.get(method)
    occludes = method != "grad_x_input"
    return AttributionResult(
        scores=normalise(raw_scores, mask, normalize),
        raw_scores=raw_scores,
        str_tokens=setup.str_tokens,
        tokens=tokens[0].cpu(),
        attributed=mask,
        method=method,
        target=objective.description,
        predicted_token=adapter.token_strings([predicted])[0],
        predicted_token_id=predicted,
        normalisation=normalize,
        signed=signed,
        metric=metric if occludes else None,
        baseline=base.name if occludes else None,
        window=window if occludes else None,
        weights=weights if combined else None,
        agreement=rank_agreement(raw["grad_x_input"], raw["occlusion"], mask) if combined else None,
        components=parts or None,
        matrix=None if raw_matrix is None else normalise(raw_matrix, mask, normalize),
        raw_matrix=raw_matrix,
        output_positions=list(objective.rows) if per_output else None,
        spec=AttributionSpec(target=target, baseline=baseline, include_bos=include_bos),
    )
