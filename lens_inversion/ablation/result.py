"""AblationResult: sweep values over layers × positions (or layers × widths), with plots."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jaxtyping import Float
from torch import Tensor

from ..validation import check_destination

METRIC_TITLES = {
    "kl": "KL(clean ‖ ablated) at the readout token",
    "logit_diff": "logit(answer) − logit(foil) at the readout token",
    "cross_entropy": "mean next-token loss (cross-entropy) over the prompt",
    "loss": "mean next-token loss over the prompt",
    "prob": "probability of the answer at the readout token",
}


@dataclass(frozen=True, kw_only=True)
class AblationResult:
    """Output metric after ablating each cell of a sweep.

    Attributes:
        values: [layers, columns] metric of the ablated run; columns are positions
            (`kind="positions"`) or kept widths (`kind="widths"`).
        layers: the layer of each row.
        columns: the position or width of each column.
        clean: the same metric on the unablated run (0 for "kl").
        str_tokens: the prompt's tokens, for labels.
        readout: the position whose prediction the metric reads (None for "cross_entropy" and
            callables, which see every position).
    """
    checks: tuple = field(default=(), repr=False, compare=False)  # self-check verdicts the call relied on

    values: Float[Tensor, "layer column"]
    layers: list[int]
    columns: list[int]
    kind: Literal["positions", "widths"]
    metric: str
    ablation: str
    site: str
    clean: float
    str_tokens: list[str]
    readout: int | None

    def __repr__(self) -> str:
        rows, cols = self.values.shape
        return (
            f"AblationResult({self.ablation} ablation of {self.site}, metric={self.metric!r}, "
            f"{rows} layers × {cols} {self.kind}, values in [{float(self.values.min()):.4g}, "
            f"{float(self.values.max()):.4g}], clean={self.clean:.4g})"
        )

    @property
    def column_labels(self) -> list[str]:
        """Column labels for plots: the kept width, or `position: 'token'`."""
        if self.kind == "widths":
            return [str(w) for w in self.columns]
        return [f"{p}: {self.str_tokens[p]!r}" for p in self.columns]

    def _title(self) -> str:
        what = METRIC_TITLES.get(self.metric, self.metric)
        where = "" if self.readout is None else f" (readout {self.readout}: {self.str_tokens[self.readout]!r})"
        return f"{self.ablation} ablation of {self.site}: {what}{where}"

    def plot(self, *, title: str | None = None, log: bool = False):
        """Heatmap over layers × positions, or one curve per layer over the kept width.

        `log=True` colours the heatmap by log10 of the values (non-negative metrics such
        as KL), so small effects stay visible beside the ablation of the readout token
        itself; hover text shows the raw values either way.
        """
        import plotly.graph_objects as go

        from ..viz.heatmap import log_color_values, plotly_text

        values = self.values.detach().float().cpu().numpy()
        title = plotly_text(title or self._title())
        if self.kind == "widths":
            fig = go.Figure(
                [
                    go.Scatter(x=self.columns, y=values[i], mode="lines+markers", name=f"layer {lay}")
                    for i, lay in enumerate(self.layers)
                ]
            )
            fig.add_hline(y=self.clean, line_dash="dot", annotation_text="clean")
            fig.update_layout(title=title, xaxis_title="features kept", yaxis_title=self.metric)
            return fig
        z = values
        colorbar: dict[str, object] = dict(title=self.metric)
        if log:
            z, ticks, labels = log_color_values(values)
            colorbar = dict(title=f"{self.metric} (log)", tickvals=ticks, ticktext=labels)
        fig = go.Figure(
            go.Heatmap(
                z=z,
                customdata=values,
                x=[plotly_text(str(label)) for label in self.column_labels],
                y=[f"layer {lay}" for lay in self.layers],
                colorscale="Viridis",
                colorbar=colorbar,
                hovertemplate="%{y}, %{x}<br>" + self.metric + " = %{customdata:.4g}<extra></extra>",
            )
        )
        fig.update_layout(title=title, xaxis_title="ablated position", yaxis_title="ablated layer")
        fig.update_yaxes(autorange="reversed")
        return fig

    def to_html(self, path: "str | Path") -> Path:
        """Write the plot as a standalone HTML file; return its path."""
        path = check_destination(path)
        from ..viz.html import write_figures_html

        return write_figures_html(path, self.plot(), title=f"{self.ablation} ablation of {self.site}",
                                  heading=f"{self.ablation.capitalize()} ablation of each {self.site} cell",
                                  explanation=f"Each cell ablates one (layer, position) of {self.site} and shows the "
                                  f"{self.metric} of the prediction at the last position against the clean run.")
