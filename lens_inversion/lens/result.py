"""LogitLensResult: per row × position metrics of the logit lens, a heatmap and HTML."""

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import OptionError, check_choice
from ..validation import check_destination
from ..viz.heatmap import SAFE_SCALES, ColorScale, ScaleName, layer_position_heatmap
from ..viz.html import write_figures_html

Metric = Literal["kl", "rank", "prob", "entropy", "cross_entropy", "top1"]
METRICS = ("kl", "rank", "prob", "entropy", "cross_entropy", "top1")


_LENS_NAMES = {"logit": "Logit lens", "tuned": "Tuned lens", "jacobian": "Jacobian lens", "custom": "Custom lens"}


def lens_title(lens: str, row_labels: list[str], row_lenses: list[str]) -> str:
    """A lens's display name, naming the rows it read with the identity (the logit lens)."""
    name = _LENS_NAMES.get(lens, lens)
    fallback = [label for label, kind in zip(row_labels, row_lenses, strict=False) if kind == "logit"]
    if lens == "logit" or not fallback:
        return name
    return f"{name} (rows {', '.join(fallback)} with the logit lens)"


def _visible(token: str) -> str:
    """A token as it reads on an axis: spaces and newlines made visible, HTML escaped."""
    return html.escape(token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥"))


@dataclass(frozen=True, kw_only=True)
class LogitLensResult:
    """The logit lens of one prompt ([row, pos]) or of a batch ([batch, row, pos]).

    Attributes:
        kl: KL(final ‖ row) (compare="final") or KL(input ‖ row) (compare="input"), nats.
        rank: rank of `target_tokens` in each row (1 = top; 1 + tokens strictly above it).
        prob: probability of `target_tokens` in each row.
        entropy: entropy of each row's distribution, nats.
        cross_entropy: −log p(true next token); NaN at each prompt's last position.
        top_tokens, top_probs: [..., k] the row's k most probable tokens.
        tokens: [*batch, pos] input ids; final_top1: the model's top-1 next token;
            next_tokens: the true next token (−1 where none); target_tokens: what
            rank/prob measure (final top-1, or the input token for compare="input");
            correct: final top-1 == true next token; valid: not padding.
        str_tokens, next_str_tokens: token strings per column (nested for a batch).
        row_labels, row_sites: one label and (site, layer) per row, input row first.
        positions: the prompt positions of the columns.
        lens: the lens that decoded the rows: "logit", "tuned", "jacobian" or "custom".
        row_lenses: per row, what decoded it: the lens's kind, "logit" where the lens has
            no translator for that row, "model" for the output row.
    Padding cells hold NaN (−1 for token ids).
    """
    checks: tuple = field(default=(), repr=False, compare=False)  # self-check verdicts the call relied on

    kl: Float[Tensor, "*batch row pos"]
    rank: Float[Tensor, "*batch row pos"]
    prob: Float[Tensor, "*batch row pos"]
    entropy: Float[Tensor, "*batch row pos"]
    cross_entropy: Float[Tensor, "*batch row pos"]
    top_tokens: Int[Tensor, "*batch row pos k"]
    top_probs: Float[Tensor, "*batch row pos k"]
    tokens: Int[Tensor, "*batch pos"]
    final_top1: Int[Tensor, "*batch pos"]
    next_tokens: Int[Tensor, "*batch pos"]
    target_tokens: Int[Tensor, "*batch pos"]
    correct: Bool[Tensor, "*batch pos"]
    valid: Bool[Tensor, "*batch pos"]
    str_tokens: list
    next_str_tokens: list
    row_labels: list[str]
    row_sites: list[tuple[str, int | None]]
    positions: list[int]
    compare: str
    top_k: int
    batched: bool
    vocab_strings: dict[int, str] = field(repr=False, compare=False)
    lens: str = "logit"
    row_lenses: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        batch = f"{self.kl.shape[0]} prompts, " if self.batched else ""
        n_valid = int((self.next_tokens >= 0).sum())
        return (
            f"LogitLensResult(lens={self.lens!r}, compare={self.compare!r}, {batch}{len(self.row_labels)} rows × "
            f"{len(self.positions)} positions, rows: {', '.join(self.row_labels)}; "
            f"final top-1 correct at {int(self.correct.sum())}/{n_valid} positions)"
        )

    @property
    def lens_title(self) -> str:
        """The lens's name as plots show it ("Tuned lens"; rows that fell back to the identity named)."""
        return lens_title(self.lens, self.row_labels, self.row_lenses)

    @property
    def matches_final(self) -> Bool[Tensor, "*batch row pos"]:
        """Where the row's top-1 token equals the model's final top-1 (the outlined cells)."""
        return (self.top_tokens[..., 0] == self.final_top1[..., None, :]) & self.valid[..., None, :]

    def token_str(self, token_id: "int | np.integer | Int[Tensor, '']") -> str:
        """The text of a token id that appears in this result."""
        return self.vocab_strings.get(int(token_id), f"<{int(token_id)}>")

    def _pick(self, value: Tensor, index: int) -> Tensor:
        if not self.batched:
            return value
        if not -value.shape[0] <= index < value.shape[0]:
            raise OptionError(f"index={index} is out of range for a batch of {value.shape[0]} prompts.")
        return value[index]

    def _scale(self, metric: str, values: np.ndarray, clip, log, colorscale: str) -> ColorScale:
        finite = values[np.isfinite(values)]
        top = max(float(finite.max()) if finite.size else 1.0, _MIN_TOP)
        defaults = {
            "kl": (0.0, min(NATS_CLIP, top), False, "KL (nats)"),
            "rank": (1.0, RANK_CLIP, True, "rank"),
            "prob": (0.0, 1.0, False, "probability"),
            "top1": (0.0, 1.0, False, "top-1 probability"),
            "entropy": (0.0, top, False, "entropy (nats)"),
            "cross_entropy": (0.0, min(NATS_CLIP, top), False, "cross-entropy (nats)"),
        }
        lo, hi, is_log, title = defaults[metric]
        if clip is not None:
            lo, hi = clip
        if log is not None:
            is_log = log
        if is_log and ((lo is not None and lo <= 0) or (hi is not None and hi <= 0)):
            raise OptionError(f"A log colour scale needs a positive clip range; got clip=({lo}, {hi}).")
        reverse = metric in ("kl", "rank", "entropy", "cross_entropy")  # bright = close / confident
        return ColorScale(name=colorscale, zmin=lo, zmax=hi, log=is_log, reverse=reverse, title=title)

    def plot(
        self,
        *,
        metric: Metric = "kl",
        index: int = 0,
        top_down: bool = False,
        clip: "tuple[float | int | None, float | int | None] | None" = None,
        log: bool | None = None,
        colorscale: ScaleName = "Viridis",
        cell_text: bool = True,
    ) -> go.Figure:
        """Heatmap of one metric: rows on y (input at the bottom unless `top_down`), positions on x.

        The bottom axis shows the input tokens, the top axis the true next tokens with a
        `*` where the model's final top-1 is right; cells show the row's top-1 token and
        are outlined where it equals the final top-1. Defaults: KL clipped at 30, rank on a
        log scale from 1 to 1000, probabilities 0–1; `clip=(lo, hi)` and `log=` override.

        Args:
            metric: kl | rank | prob | entropy | cross_entropy | top1 (top-1 probability).
            index: which prompt of a batch.
            top_down: draw the input row at the top instead of the bottom.
            clip: (low, high) colour range; values outside saturate.
            log: map colours on a log10 scale (default: only for rank).
            colorscale: a colour-blind-safe Plotly scale name (Viridis, Cividis, ...).
            cell_text: print each cell's top-1 token.
        """
        check_choice("metric", metric, METRICS)
        check_choice("colorscale", colorscale, SAFE_SCALES)
        value = self.top_probs[..., 0] if metric == "top1" else getattr(self, metric)
        n_cols = int(self._pick(self.valid, index).sum())  # padding columns are trailing; drop them
        values = self._pick(value, index).numpy()[:, :n_cols]
        top_ids = self._pick(self.top_tokens, index).numpy()[:, :n_cols]
        text = np.vectorize(lambda i: _visible(self.token_str(i)) if i >= 0 else "", otypes=[object])(top_ids[..., 0])
        bottom, top = self._axis_labels(index, n_cols)
        return layer_position_heatmap(
            values,
            x_labels=bottom,
            y_labels=self.row_labels,
            top_labels=top,
            text=text if cell_text else None,
            hover=self._hover(metric, values, index),
            outline=self._pick(self.matches_final, index).numpy()[:, :n_cols],
            scale=self._scale(metric, values, clip, log, colorscale),
            title=f"{self.lens_title}: {_metric_title(metric, self.compare)}",
            legend="outlined cell: the row's top-1 token equals the model's final top-1 · "
                   "* after a top-axis token: the model's final top-1 predicts it correctly",
            x_title="input token",
            y_title="row",
            top_down=top_down,
        )

    def _prompt_strings(self, index: int) -> tuple[list[str], list[str]]:
        """The input tokens and the true next tokens of one prompt."""
        if self.batched:
            return self.str_tokens[index], self.next_str_tokens[index]
        return self.str_tokens, self.next_str_tokens

    def _axis_labels(self, index: int, n_cols: int) -> tuple[list[str], list[str]]:
        """Bottom labels (input tokens) and top labels (next tokens, `*` where the final top-1 is right)."""
        str_tokens, next_str = self._prompt_strings(index)
        correct = self._pick(self.correct, index).numpy()
        bottom = [_visible(t) for t in str_tokens[:n_cols]]
        top = [_visible(t) + ("*" if ok else "") for t, ok in zip(next_str[:n_cols], correct[:n_cols], strict=True)]
        return bottom, top

    def _hover(self, metric: str, values: np.ndarray, index: int) -> np.ndarray:
        """Per-cell hover text: the row, position and token, the value, and the cell's top-k tokens."""
        n_cols = values.shape[1]
        top_ids = self._pick(self.top_tokens, index).numpy()
        top_p = self._pick(self.top_probs, index).numpy()
        target = self._pick(self.target_tokens, index).numpy()
        str_tokens, _ = self._prompt_strings(index)
        word = _COMPARED_TOKEN[self.compare]
        hover = np.empty(values.shape, dtype=object)
        for r, label in enumerate(self.row_labels):
            for c in range(n_cols):
                tops = "<br>".join(
                    f"{_visible(self.token_str(t))}: {p:.3f}" for t, p in zip(top_ids[r, c], top_p[r, c], strict=True)
                )
                hover[r, c] = (
                    f"row {html.escape(label)}, pos {self.positions[c]} {_visible(str_tokens[c])!s}<br>"
                    f"{metric} = {values[r, c]:.4g} ({word} {_visible(self.token_str(target[c]))})<br>{tops}"
                )
        return hover

    def to_html(self, path: "str | Path", *, metrics: Sequence[Metric] = ("kl", "rank"), index: int = 0) -> Path:
        """Write the heatmaps of `metrics` to one self-contained offline HTML file."""
        path = check_destination(path)
        figs = [self.plot(metric=m, index=index) for m in metrics]
        return write_figures_html(path, figs, title=f"{self.lens_title} ({self.compare})")


NATS_CLIP = 30.0  # KL / cross-entropy colours saturate here: past ~30 nats the row has nothing left to show
RANK_CLIP = 1000.0  # rank colours (log scale) saturate at 1000: beyond it a token is simply "not predicted"
_MIN_TOP = 1e-6  # keeps the colour range non-empty when every value is 0 (a row compared with itself)
_COMPARED_TOKEN = {"final": "final top-1", "input": "input token"}


def _metric_title(metric: str, compare: str) -> str:
    """What a heatmap of `metric` shows, for its title."""
    word = _COMPARED_TOKEN[compare]
    return {
        "kl": f"KL({compare} ‖ row)",
        "rank": f"rank of the {word}",
        "prob": f"probability of the {word}",
        "top1": "top-1 probability",
        "entropy": "entropy",
        "cross_entropy": "cross-entropy of the next token",
    }[metric]


__all__ = ["METRICS", "LogitLensResult"]
