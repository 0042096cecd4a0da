"""AttributionResult: per-token scores with their provenance, a bar chart / heatmap and HTML."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import plotly.graph_objects as go
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..deprecation import renamed_field
from ..errors import OptionError
from ..validation import check_destination
from ..viz.heatmap import plotly_text
from ..viz.tokens_html import highlight_tokens, write_page


@dataclass(frozen=True, kw_only=True)
class AttributionResult:
    """How much each input token matters for one output.

    Attributes:
        scores: [pos] attribution per prompt token after normalisation; 0 where not
            attributed (BOS unless `include_bos=True`).
        raw_scores: [pos] the same before normalisation.
        str_tokens, tokens: the prompt.
        attributed: [pos] which positions were attributed.
        method: "grad_x_input" | "occlusion" | "combined".
        target: what O is, in words.
        predicted_token, predicted_token_id: the model's top next token after the prompt.
        normalize: "max_abs" (divided by the largest |score|: [0, 1], or [-1, 1] when
            signed) or "none".
        signed: gradient × input kept its sign (Σ ∂O/∂a · a instead of Σ |∂O/∂a · a|).
        metric, baseline, window: occlusion settings (None for grad_x_input).
        weights, agreement, components: combined only — (w_grad, w_occlusion), Spearman ρ
            between the two methods, and each method's max-abs normalised scores.
        matrix, raw_matrix, output_positions: per-output mode only — [out, pos] scores of
            every output row (row-normalised) and the positions those rows read.
    """
    checks: tuple = field(default=(), repr=False, compare=False)  # self-check verdicts the call relied on

    scores: Float[Tensor, " pos"]
    raw_scores: Float[Tensor, " pos"]
    str_tokens: list[str]
    tokens: Int[Tensor, " pos"]
    attributed: Bool[Tensor, " pos"]
    method: str
    target: str
    predicted_token: str
    predicted_token_id: int
    normalize: str
    signed: bool
    metric: str | None = None
    baseline: str | None = None
    window: int | None = None
    weights: tuple[float, float] | None = None
    agreement: float | None = None
    components: dict[str, Tensor] | None = None
    matrix: Float[Tensor, "out pos"] | None = None
    raw_matrix: Float[Tensor, "out pos"] | None = None
    output_positions: list[int] | None = None
    spec: Any = field(default=None, repr=False, compare=False)  # the call's options, for faithfulness()
    normalisation = renamed_field("normalisation", "normalize")  # not a field: the old spelling, deprecated

    def __repr__(self) -> str:
        top = self.top(3)
        shown = ", ".join(f"{t!r}={s:.3g}" for _, t, s in top)
        extra = f", agreement={self.agreement:.3f}" if self.agreement is not None else ""
        extra += f", matrix={tuple(self.matrix.shape)}" if self.matrix is not None else ""
        return (
            f"AttributionResult({self.method} for {self.target}, {len(self.str_tokens)} tokens, "
            f"predicted {self.predicted_token!r}, top: {shown}{extra})"
        )

    def top(self, k: int = 5) -> list[tuple[int, str, float]]:
        """The k attributed tokens with the largest scores: (position, token, score)."""
        order = self.scores.masked_fill(~self.attributed, float("-inf")).argsort(descending=True)
        chosen = [int(i) for i in order[: min(k, int(self.attributed.sum()))]]
        return [(i, self.str_tokens[i], float(self.scores[i])) for i in chosen]

    def _labels(self) -> list[str]:
        return [f"{i}: {t!r}" for i, t in enumerate(self.str_tokens)]

    def _title(self) -> str:
        how = {"grad_x_input": "gradient × input"}.get(self.method, self.method)
        if self.metric is not None:
            how += f" ({self.metric}, baseline {self.baseline}, window {self.window})"
        return f"{how} for {self.target}"

    def plot(self, *, kind: Literal["bar", "heatmap"] | None = None) -> go.Figure:
        """A bar per token, or the [output × input] heatmap in per-output mode (the default there)."""
        kind = kind or ("heatmap" if self.matrix is not None else "bar")
        if kind == "heatmap":
            if self.matrix is None:
                raise OptionError("This result has no per-output matrix; call attribute(..., per_output=True).")
            assert self.output_positions is not None  # narrowing: set with `matrix`
            labels = [plotly_text(label) for label in self._labels()]
            fig = go.Figure(
                go.Heatmap(
                    z=self.matrix.tolist(),
                    x=labels,
                    y=[labels[p] for p in self.output_positions],
                    colorscale="RdBu_r",
                    zmid=0 if self.signed else None,
                    colorbar=dict(title="score"),
                    hovertemplate="output %{y}<br>input %{x}<br>score %{z:.4g}<extra></extra>",
                )
            )
            fig.update_layout(title=plotly_text(self._title()), xaxis_title="input token", yaxis_title="output position")
            fig.update_yaxes(autorange="reversed")
            return fig
        colors = [
            "#bbbbbb" if not a else ("#d62728" if s >= 0 else "#3163ce")
            for a, s in zip(self.attributed.tolist(), self.scores.tolist(), strict=True)
        ]
        fig = go.Figure(
            go.Bar(
                x=[plotly_text(label) for label in self._labels()],
                y=self.scores.tolist(),
                marker_color=colors,
                customdata=self.raw_scores.tolist(),
                hovertemplate="%{x}<br>score %{y:.4g}<br>raw %{customdata:.4g}<extra></extra>",
            )
        )
        fig.update_layout(
            title=plotly_text(self._title() + f" → predicted {self.predicted_token!r}"),
            xaxis_title="input token",
            yaxis_title=f"score ({self.normalize})",
        )
        return fig

    def html(self) -> str:
        """The highlighted prompt as an HTML fragment (tokens escaped)."""
        details = [f"normalization: {self.normalize}"]
        if self.agreement is not None:
            details.append(
                f"weights (grad × input, occlusion): {self.weights}; rank agreement ρ = {self.agreement:.3f}"
            )
        colours = self.scores
        if self.normalize == "none":
            scale = float(colours.abs().max())
            colours = colours / scale if scale > 0 else colours
        return highlight_tokens(
            self.str_tokens,
            colours.tolist(),
            signed=bool((self.scores < 0).any()) or self.signed,
            muted=(~self.attributed).tolist(),
            title=self._title(),
            legend_label=f"score ({self.normalize})",
            predicted_token=self.predicted_token,
            details=details,
        )

    def _repr_html_(self) -> str:
        return self.html()

    def to_html(self, path: "str | Path") -> Path:
        """Write the highlighted prompt as a standalone HTML page; returns the path."""
        path = check_destination(path)
        return write_page(path, self.html(), title=self._title())
