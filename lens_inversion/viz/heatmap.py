"""A generic Plotly heatmap of rows (layers) × columns (positions).

Labelled axes (top and bottom), cell text, hover text, outlined cells and a clipped or
logarithmic colour scale.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ..errors import OptionError

# Colour-blind-safe sequential scales (perceptually uniform, readable in greyscale).
SAFE_SCALES = ("Viridis", "Cividis", "Plasma", "Inferno", "Magma")


@dataclass(frozen=True, kw_only=True)
class ColorScale:
    """How values map to colours: a name, a clip range, and an optional log10 axis."""

    name: str = "Viridis"
    zmin: float | int | None = None
    zmax: float | int | None = None
    log: bool = False
    reverse: bool = False
    title: str = ""


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Colour-bar ticks at 1, 10, 100, ... between lo and hi (in log10 units)."""
    vals = [float(e) for e in range(int(np.floor(lo)), int(np.ceil(hi)) + 1)]
    return vals, [f"{10**v:g}" for v in vals]


def log_color_values(values: np.ndarray, *, dynamic_range: float = 1e4) -> tuple[np.ndarray, list[float], list[str]]:
    """log10 of non-negative values for colouring, floored at max / dynamic_range; with colour-bar ticks.

    Negatives within float rounding of zero are coloured as the floor.

    Raises:
        OptionError: when a value is negative (a log colour scale cannot show it).
    """
    finite = values[np.isfinite(values)]
    rounding = 1e-5 * float(np.abs(finite).max()) if finite.size else 0.0  # KL of equal rows can be -1e-7
    if finite.size and finite.min() < -rounding:
        raise OptionError(
            f"A log colour scale needs non-negative values; the smallest is {finite.min():.4g}. Use log=False."
        )
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    floor = top / dynamic_range
    z = np.log10(np.clip(values, floor, None))
    ticks, labels = _log_ticks(float(np.log10(floor)), float(np.log10(top)))
    return z, ticks, labels


def _outline_traces(mask: np.ndarray) -> list[go.Scatter]:
    """Boxes around every True cell as line traces (they scale with zoom, unlike markers).

    A black line over a wider white one stays visible on light and dark cells alike.
    """
    xs: list[float | None] = []
    ys: list[float | None] = []
    for r, c in zip(*np.nonzero(mask), strict=True):
        xs += [c - 0.5, c + 0.5, c + 0.5, c - 0.5, c - 0.5, None]
        ys += [r - 0.5, r - 0.5, r + 0.5, r + 0.5, r - 0.5, None]
    return [
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line=dict(color=color, width=width),
            hoverinfo="skip",
            showlegend=False,
            name="outline",
        )
        for color, width in (("#ffffff", 3.5), ("#000000", 1.5))
    ]


def layer_position_heatmap(
    values: np.ndarray,
    *,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    top_labels: Sequence[str] | None = None,
    text: np.ndarray | None = None,
    hover: np.ndarray | None = None,
    outline: np.ndarray | None = None,
    scale: ColorScale = ColorScale(),
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    top_down: bool = False,
) -> go.Figure:
    """Build a [rows, cols] heatmap; row 0 is drawn at the bottom unless `top_down`.

    Axes are numeric with tick labels, so repeated labels (the same token twice) stay
    separate columns.

    Args:
        values: [rows, cols] numbers; NaN cells are left blank.
        x_labels: one bottom-axis label per column.
        y_labels: one label per row.
        top_labels: optional top-axis labels, one per column.
        text: [rows, cols] strings printed in the cells.
        hover: [rows, cols] strings (HTML allowed: `<br>`) shown on hover.
        outline: [rows, cols] booleans; True cells get a black-on-white box.
        scale: colour scale, clip range (zmin/zmax) and log10 mapping.
        title: the figure's title.
        x_title: bottom axis title.
        y_title: row axis title.
        top_down: draw row 0 at the top.
    """
    values = np.asarray(values, dtype=float)
    n_rows, n_cols = values.shape
    if len(x_labels) != n_cols or len(y_labels) != n_rows:
        raise ValueError(
            f"values has shape {values.shape} but got {len(y_labels)} row labels and {len(x_labels)} column labels."
        )
    z = values.copy()
    lo, hi = scale.zmin, scale.zmax
    if scale.log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log10(np.where(z > 0, z, np.nan))
        lo = None if lo is None else float(np.log10(lo))
        hi = None if hi is None else float(np.log10(hi))
    if lo is not None or hi is not None:
        z = np.clip(z, lo, hi)
    colorbar = dict(title=dict(text=scale.title))
    if scale.log:
        finite = z[np.isfinite(z)]
        a = lo if lo is not None else (finite.min() if finite.size else 0.0)
        b = hi if hi is not None else (finite.max() if finite.size else 1.0)
        colorbar["tickvals"], colorbar["ticktext"] = _log_ticks(a, b)
    cols, rows = np.arange(n_cols), np.arange(n_rows)
    heat = go.Heatmap(
        z=z,
        x=cols,
        y=rows,
        zmin=lo,
        zmax=hi,
        colorscale=scale.name,
        reversescale=scale.reverse,
        colorbar=colorbar,
        xgap=1,
        ygap=1,
        hoverongaps=False,
        text=None if text is None else np.asarray(text, dtype=object),
        texttemplate="%{text}" if text is not None else None,
        textfont=dict(size=10),
        hovertext=None if hover is None else np.asarray(hover, dtype=object),
        hovertemplate="%{hovertext}<extra></extra>" if hover is not None else None,
    )
    fig = go.Figure(heat)
    if outline is not None and np.asarray(outline).any():
        fig.add_traces(_outline_traces(np.asarray(outline, dtype=bool)))
    fig.update_layout(
        title=dict(text=title),
        xaxis=dict(
            tickvals=cols,
            ticktext=list(x_labels),
            title=dict(text=x_title),
            range=[-0.5, n_cols - 0.5],
            tickangle=-60 if n_cols > 12 else 0,
            showgrid=False,
            zeroline=False,
        ),
        yaxis=dict(
            tickvals=rows,
            ticktext=list(y_labels),
            title=dict(text=y_title),
            range=[-0.5, n_rows - 0.5],
            autorange="reversed" if top_down else None,
            showgrid=False,
            zeroline=False,
        ),
        plot_bgcolor="#f4f4f4",
        width=max(500, min(2400, 120 + 62 * n_cols)),
        height=max(320, min(1400, 160 + 34 * n_rows)),
    )
    if top_labels is not None:
        # An invisible trace anchors the top axis so Plotly draws it.
        fig.add_trace(go.Scatter(x=cols, y=[None] * n_cols, xaxis="x2", showlegend=False, hoverinfo="skip"))
        fig.update_layout(
            xaxis2=dict(
                tickvals=cols,
                ticktext=list(top_labels),
                overlaying="x",
                side="top",
                matches="x",
                tickangle=-60 if n_cols > 12 else 0,
                showgrid=False,
                zeroline=False,
            )
        )
    return fig


__all__ = ["SAFE_SCALES", "ColorScale", "layer_position_heatmap"]
