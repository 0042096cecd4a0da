"""`li.attribute_corpus`: how attribution spreads over distance and token type, over a corpus.

Prompts: one per document, BOS first, cut to the first `max_tokens_per_prompt` ids
(`prompt_items.py`). Each prompt is explained with `li.attribute(model, ids, method=...,
normalize="none")`: the model's own next-token prediction after the prompt's last token.
Every attributed position p of a prompt of n tokens (BOS left out unless `include_bos`)
adds its |score| to two exact totals (float64 sums, int64 counts):

- by relative position, the distance d = n - 1 - p from the explained position
  (0 = the last token, 1 = the one before, ... up to `max_tokens_per_prompt - 1`);
- by token type (`token_types.py`: special, whitespace, number, word_start,
  word_continuation, punctuation).

A mean is Σ |score| / Σ count over the whole corpus (every token weighs the same), never
an average of per-prompt averages. Two scales are reduced side by side: the raw scores
(`normalize="none"`: magnitudes comparable across prompts, e.g. a prompt whose prediction
barely depends on its input adds little) and the max-abs normalised ones (each prompt's
largest |score| is 1: where a prompt's attribution sits, whatever its magnitude).
"""

import json
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..attribution.api import METHODS, Method, attribute
from ..attribution.combined import DEFAULT_WEIGHTS, check_weights, max_abs
from ..attribution.objective import OCCLUSION_METRICS, OcclusionMetric
from ..attribution.occlusion import resolve_baseline
from ..deprecation import renamed_options
from ..hooks.adapter import adapter_for
from ..hooks.preserve import preserves_model
from ..validation import check_bool, check_choice, check_destination, check_int
from .distributed import joined
from .engine import Loop, RunInfo, run_items
from .prompt_items import check_prompt_options, corpus_prompts, distances, prompt_digest, prompt_size
from .runner import check_run_options
from .token_types import TOKEN_TYPES, token_types

Scale = Literal["raw", "max_abs"]
SCALES: tuple[Scale, ...] = ("raw", "max_abs")


def _means(sums: Tensor, counts: Tensor) -> Tensor:
    """The means: sums / counts, NaN where nothing was counted."""
    return torch.where(counts > 0, sums / counts.clamp(min=1).double(), torch.full_like(sums, float("nan")))


@dataclass(frozen=True, kw_only=True)
class AttributionCorpusResult:
    """Exact corpus totals of |attribution| by distance from the explained token and by token type.

    Attributes:
        sums: "raw" and "max_abs" -> {"distance": [max_tokens] Σ |score|, "type": [types] Σ |score|}.
        count_by_distance: [max_tokens] attributed tokens at each distance (0 = the last token).
        count_by_type: [types] attributed tokens of each type, in the order of `token_types`.
        token_types: the type names (`corpus.token_types.TOKEN_TYPES`).
        method, options: the `li.attribute` method and the options passed through to it.
        max_tokens_per_prompt, n_prompts: the prompt options (n_prompts None: every document).
        run: how the job ran (prompts, tokens, processes, resumed prompts).
    """

    checks: tuple = field(default=(), repr=False, compare=False)  # self-check verdicts the calls relied on
    sums: dict[str, dict[str, Float[Tensor, " bins"]]]
    count_by_distance: Int[Tensor, " distance"]
    count_by_type: Int[Tensor, " types"]
    token_types: tuple[str, ...]
    method: str
    options: dict
    max_tokens_per_prompt: int
    n_prompts: int | None
    run: RunInfo

    def mean_by_distance(self, scale: Scale = "raw") -> Float[Tensor, " distance"]:
        """Mean |score| at each distance from the explained token (NaN where no token was that far)."""
        check_choice("scale", scale, SCALES)
        return _means(self.sums[scale]["distance"], self.count_by_distance)

    def mean_by_type(self, scale: Scale = "raw") -> Float[Tensor, " types"]:
        """Mean |score| of each token type (NaN for a type the corpus never attributed)."""
        check_choice("scale", scale, SCALES)
        return _means(self.sums[scale]["type"], self.count_by_type)

    def to_dict(self) -> dict:
        """The totals, both scales' means (NaN as None) and the run, as JSON-ready data."""
        nan_free = lambda t: [None if v != v else v for v in t.tolist()]  # noqa: E731 - JSON has no NaN
        return {
            "method": self.method, "options": self.options, "max_tokens_per_prompt": self.max_tokens_per_prompt,
            "n_prompts": self.n_prompts, "token_types": list(self.token_types),
            "count_by_distance": self.count_by_distance.tolist(), "count_by_type": self.count_by_type.tolist(),
            "sums": {s: {k: v.tolist() for k, v in parts.items()} for s, parts in self.sums.items()},
            "mean_by_distance": {s: nan_free(self.mean_by_distance(s)) for s in SCALES},
            "mean_by_type": {s: nan_free(self.mean_by_type(s)) for s in SCALES},
            "run": self.run.to_dict(),
        }

    def to_json(self, path=None) -> str:
        """The result as JSON (written to `path` when given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            check_destination(path, name="path", example="attribution.json").write_text(text)
        return text

    def __str__(self) -> str:
        raw, norm = self.mean_by_type("raw"), self.mean_by_type("max_abs")
        lines = [f"attribute_corpus ({self.method}): {self.run.items} prompts, "
                 f"{int(self.count_by_distance.sum())} attributed tokens",
                 f"{'type':<18} {'tokens':>8} {'mean |raw|':>11} {'mean |max_abs|':>15}"]
        for i, name in enumerate(self.token_types):
            lines.append(f"{name:<18} {int(self.count_by_type[i]):>8} {float(raw[i]):>11.4g} {float(norm[i]):>15.4g}")
        near = self.mean_by_distance("raw")[:5]
        lines.append("mean |raw| at distance 0..4: " + ", ".join(f"{float(v):.4g}" for v in near))
        return "\n".join(lines)

    def plot(self, *, scale: Scale = "raw"):
        """Mean |score| by distance from the explained token (line) and by token type (bars)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        by_d, by_t = self.mean_by_distance(scale), self.mean_by_type(scale)
        fig = make_subplots(rows=1, cols=2, subplot_titles=("by distance from the explained token", "by token type"))
        fig.add_trace(go.Scatter(x=list(range(len(by_d))), y=by_d.tolist(), mode="lines+markers", name="distance",
                                 customdata=self.count_by_distance.tolist(),
                                 hovertemplate="distance %{x}<br>mean %{y:.4g}<br>%{customdata} tokens<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Bar(x=list(self.token_types), y=by_t.tolist(), name="type",
                             customdata=self.count_by_type.tolist(),
                             hovertemplate="%{x}<br>mean %{y:.4g}<br>%{customdata} tokens<extra></extra>"), row=1, col=2)
        fig.update_xaxes(title_text="distance (0 = last token)", row=1, col=1)
        fig.update_yaxes(title_text=f"mean |score| ({scale})", row=1, col=1)
        fig.update_layout(title=f"{self.method} attribution over {self.run.items} prompts", showlegend=False)
        return fig


def _check_options(adapter, method, metric, baseline, window, signed, include_bos, weights, batch_size) -> list[float]:
    check_choice("method", method, METHODS)
    check_choice("metric", metric, OCCLUSION_METRICS)
    resolve_baseline(adapter, baseline)
    check_int("window", window, low=1)
    check_bool("signed", signed)
    check_bool("include_bos", include_bos)
    check_int("batch_size", batch_size, low=1, allow_none=True)
    return list(check_weights(weights))


def _statistic(adapter, model, options: dict, n_bins: int):
    """The per-prompt step: attribute, then the |score| sums and counts by distance and by type."""

    def step(prompt: Tensor) -> dict:
        result = attribute(model, prompt, normalize="none", progress=False, **options)
        mask = result.attributed.cpu()
        raw = result.raw_scores.detach().cpu().double()
        scales = {"raw": raw.abs()[mask], "max_abs": max_abs(raw, mask).abs()[mask]}
        where = {"distance": (distances(len(prompt))[mask], n_bins),
                 "type": (torch.tensor(token_types(adapter, prompt.tolist()))[mask], len(TOKEN_TYPES))}
        out = {}
        for axis, (index, size) in where.items():
            out[f"n/{axis}"] = torch.zeros(size, dtype=torch.int64).index_add_(0, index, torch.ones_like(index))
            for scale, values in scales.items():
                out[f"{scale}/{axis}"] = torch.zeros(size, dtype=torch.float64).index_add_(0, index, values)
        return out

    return step


@renamed_options(chunk_size="batch_size")
@preserves_model
def attribute_corpus(model, corpus, /, *, method: Method = "grad_x_input", n_prompts: int | None = 256,
                     max_tokens_per_prompt: int = 64, text_key: str = "text", baseline: "str | int" = "pad",
                     metric: OcclusionMetric = "l1", window: int = 1, signed: bool = False, include_bos: bool = False,
                     weights: tuple[float, float] = DEFAULT_WEIGHTS, batch_size: int | None = None,
                     checkpoint=None, checkpoint_every: int = 10, progress: bool = True) -> AttributionCorpusResult:
    """Attribute each prompt of a corpus and reduce |score| by distance and by token type.

    Args:
        model: a TransformerBridge or HookedTransformer.
        corpus: texts, .txt/.jsonl paths or a datasets.Dataset (see `lens.token_stream`).
        method: "grad_x_input", "occlusion" or "combined" (as `li.attribute`).
        n_prompts: prompts to attribute, one per document in corpus order (None: every document).
        max_tokens_per_prompt: each prompt is its document's first this-many ids, BOS included.
        text_key: the text field of .jsonl lines and dataset rows.
        baseline: occlusion filler, as `li.attribute` (also metric, window, signed, weights,
            batch_size; scores are always taken with normalize="none", see `sums`).
        metric: occlusion change, as `li.attribute`.
        window: occluded tokens per variant, as `li.attribute`.
        signed: gradient × input keeps its sign (the totals take |score| either way).
        include_bos: attribute to BOS too (its type is "special").
        weights: (w_grad, w_occlusion) for "combined".
        batch_size: variants per forward, as `li.attribute` (`chunk_size` before 0.3).
        checkpoint: a file to save progress to and resume from.
        checkpoint_every: prompts between checkpoint saves.
        progress: show a progress bar (rank 0).

    Returns:
        An AttributionCorpusResult (`.mean_by_distance()`, `.mean_by_type()`, `.plot()`).

    Raises:
        OptionError, PromptError: bad options or corpus, before the model runs.
        DistributedError: under torchrun, a peer process failed.
    """
    adapter = adapter_for(model)
    check_prompt_options(adapter, corpus, n_prompts=n_prompts, max_tokens_per_prompt=max_tokens_per_prompt,
                         text_key=text_key)
    checked = _check_options(adapter, method, metric, baseline, window, signed, include_bos, weights, batch_size)
    path = check_run_options(checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress)
    options = dict(method=method, baseline=baseline, metric=metric, window=window, signed=signed,
                   include_bos=include_bos, weights=tuple(checked), batch_size=batch_size)
    config = {"job": "attribute_corpus", "n_prompts": n_prompts, "max_tokens_per_prompt": max_tokens_per_prompt,
              "text_key": text_key, **options, "weights": checked}
    prompts = corpus_prompts(adapter, corpus, n_prompts=n_prompts, max_tokens_per_prompt=max_tokens_per_prompt,
                             text_key=text_key)
    with joined(adapter.device) as world:
        loop = Loop(world=world, config=config, checkpoint=path, checkpoint_every=checkpoint_every,
                    progress=progress, desc="attribute_corpus")
        totals, info = run_items(prompts, _statistic(adapter, model, options, max_tokens_per_prompt), loop=loop,
                                 digest_of=prompt_digest, size_of=prompt_size)
    return AttributionCorpusResult(
        sums={s: {axis: totals[f"{s}/{axis}"] for axis in ("distance", "type")} for s in SCALES},
        count_by_distance=totals["n/distance"], count_by_type=totals["n/type"], token_types=TOKEN_TYPES,
        method=method, options={k: v for k, v in options.items() if k != "method"},
        max_tokens_per_prompt=max_tokens_per_prompt, n_prompts=n_prompts, run=info)


__all__ = ["SCALES", "AttributionCorpusResult", "attribute_corpus"]
