"""A generic Plotly heatmap of rows (layers) × columns (positions).

Labelled axes (top and bottom), cell text, hover text, outlined cells and a clipped or
logarithmic colour scale, laid out to take the page's width. Layout rules, so that nothing
is clipped or collides:

- no fixed width (Plotly's responsive config fills the container); the height grows
  with the number of rows;
- cell text is 12 px, cut with "…" to what fits a column; past HOVER_ONLY_AFTER (40)
  columns it is shown on hover only;
- tick labels are elided (`<|endoftext|>` → `<|eot|>`, anything over 12 characters
  cut with "…"; the full text stays in the hover) and drawn vertically when they
  would not fit side by side, every k-th one when even that is too dense;
- long titles wrap at word boundaries; a title's trailing "(…)" explanation (what the
  outlines and `*` marks mean) becomes a legend line under it.
"""

import html
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import plotly.graph_objects as go

from ..errors import OptionError

# Colour-blind-safe sequential scales (perceptually uniform, readable in greyscale).
SAFE_SCALES = ("Viridis", "Cividis", "Plasma", "Inferno", "Magma")
ScaleName = Literal["Viridis", "Cividis", "Plasma", "Inferno", "Magma"]


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


ROUNDING_FLOOR = 1e-5  # negative values above -this are float rounding of a zero KL


def log_color_values(values: np.ndarray, *, dynamic_range: float = 1e4) -> tuple[np.ndarray, list[float], list[str]]:
    """log10 of non-negative values for colouring, floored at max / dynamic_range; with colour-bar ticks.

    Negatives within float rounding of zero are coloured as the floor.

    Raises:
        OptionError: when a value is negative (a log colour scale cannot show it).
    """
    finite = values[np.isfinite(values)]
    # KL of (nearly) equal rows comes out slightly negative in float32: relative to the largest
    # value, and absolutely (about eps × |log p| summed over the vocabulary) when every value is tiny
    rounding = max(1e-5 * float(np.abs(finite).max()), ROUNDING_FLOOR) if finite.size else 0.0
    if finite.size and finite.min() < -rounding:
        raise OptionError(
            f"A log colour scale needs non-negative values; the smallest is {finite.min():.4g}. Use log=False."
        )
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    floor = top / dynamic_range
    z = np.log10(np.clip(values, floor, None))
    ticks, labels = _log_ticks(float(np.log10(floor)), float(np.log10(top)))
    return z, ticks, labels


# Layout rules. The figure takes the page's width (no fixed width; Plotly's responsive
# config), so column widths are only known in the browser; the label and cell-text
# rules below assume a plot area of at least _PLOT_PX pixels.
CELL_FONT_PX = 12
HOVER_ONLY_AFTER = 40  # more columns than this: cell text only on hover
TITLE_CHARS = 70  # a title line longer than this wraps at a word boundary
_PLOT_PX = 900
_CHAR_PX = 7.5  # average glyph width at 12 px
_ROW_PX = 30  # one row of cells: room for 12 px cell text with padding
_MIN_PLOT_PX, _MAX_PLOT_PX = 200, 1200  # plot-area height bounds: a 2-row plot stays readable, 100 rows scroll
_MARGIN_PX = 24  # space above the title
_HEADING_LINE_PX = 24  # one line of the (wrapped) title or legend
_AXIS_TITLE_PX = 50  # the bottom axis title and its gap to the tick labels
_LABEL_CHARS = 12  # longer axis labels are elided with "…"
_SHORT_SPECIALS = {
    "<|endoftext|>": "<|eot|>",
    "<|end_of_text|>": "<|eot|>",
    "<|begin_of_text|>": "<|bot|>",
    "<|eot_id|>": "<|eot|>",
}
_SPECIAL = re.compile(r"<\|([^<>|]*)\|>")


def plotly_text(text: str) -> str:
    """`text` escaped for Plotly's pseudo-HTML, so `<b>` or `<|endoftext|>` shows literally.

    Idempotent: text already escaped (`&lt;b&gt;`) is left as it is, so callers may pass
    either; the price is that raw text spelling an entity (`&amp;`) shows as `&`.
    """
    return html.escape(html.unescape(text), quote=False)


def short_label(label: str, *, limit: int = _LABEL_CHARS) -> str:
    """An axis label short enough not to run into its neighbours (raw or escaped in, escaped out).

    Special tokens get a short form (`<|endoftext|>` → `<|eot|>`, other `<|…|>` keep three
    letters); anything still longer than `limit` characters is cut with "…". A trailing
    `*` mark is kept.
    """
    text = html.unescape(label)
    mark = "*" if text.endswith("*") and len(text) > 1 else ""
    text = text[: len(text) - len(mark)]
    text = _SPECIAL.sub(lambda m: _SHORT_SPECIALS.get(m.group(0), f"<|{m.group(1)[:3]}|>"), text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return plotly_text(text + mark)


def wrap_title(title: str, *, width: int = TITLE_CHARS) -> str:
    """`title` escaped, with `<br>` at word boundaries so no line is longer than `width` characters."""
    lines = []
    for part in re.split(r"<br\s*/?>", title):
        lines += textwrap.wrap(html.unescape(part), width=width, break_long_words=False) or [""]
    return "<br>".join(plotly_text(line) for line in lines)


def _split_note(title: str) -> tuple[str, str]:
    """A title's trailing "(…)" explanation, split off to become the legend line."""
    match = re.fullmatch(r"(.*\S)\s*\(([^()]*)\)\s*", title)
    return (match.group(1), match.group(2).replace("; ", " · ")) if match else (title, "")


def _labels_fit(labels: Sequence[str], n_cols: int) -> bool:
    """Whether the longest label fits its column horizontally in a _PLOT_PX-wide plot."""
    widest = max((len(html.unescape(t)) for t in labels), default=0)
    return widest * _CHAR_PX + 8 <= _PLOT_PX / max(n_cols, 1)


def _label_px(labels: Sequence[str], *, upright: bool) -> int:
    """The height the tick labels take: one line, or the longest label when rotated."""
    widest = max((len(html.unescape(t)) for t in labels), default=0)
    return 20 if upright else int(widest * _CHAR_PX) + 12


def _tick_axis(labels: Sequence[str], n_cols: int, *, upright: bool) -> dict:
    """A numeric x axis with short labels: upright when they fit, else vertical, thinned when dense."""
    step = max(1, int(np.ceil(n_cols * 18 / _PLOT_PX)))  # vertical labels need ~18 px each
    cols = list(range(0, n_cols, step))
    return dict(
        tickvals=cols,
        ticktext=[labels[c] for c in cols],
        tickangle=0 if upright else -90,
        tickfont=dict(size=12),
        range=[-0.5, n_cols - 0.5],
        automargin=True,
        showgrid=False,
        zeroline=False,
    )


def _cell_text(text: np.ndarray, n_cols: int) -> np.ndarray:
    """Cell strings cut with "…" to what fits a column of a _PLOT_PX-wide plot."""
    limit = max(3, int(_PLOT_PX / max(n_cols, 1) / 7))
    return np.vectorize(lambda t: short_label(str(t), limit=limit), otypes=[object])(np.asarray(text, dtype=object))


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
    legend: str | None = None,
    x_title: str = "",
    y_title: str = "",
    top_down: bool = False,
) -> go.Figure:
    """Build a [rows, cols] heatmap that takes the page's width; row 0 at the bottom unless `top_down`.

    Repeated labels (the same token twice) stay separate columns; the layout rules are in the
    module's docstring. Labels, text and titles may be raw or HTML-escaped (see `plotly_text`).

    Args:
        values: [rows, cols] numbers; NaN cells are left blank.
        x_labels: one bottom-axis label per column.
        y_labels: one label per row.
        top_labels: optional top-axis labels, one per column.
        text: [rows, cols] strings printed in the cells.
        hover: [rows, cols] strings (HTML allowed) shown on hover; default: label, row, value.
        outline: [rows, cols] booleans; True cells get a black-on-white box.
        scale: colour scale, clip range (zmin/zmax) and log10 mapping.
        title: the figure's title.
        legend: a line under the title explaining the marks (None: the title's "(…)"; "": none).
        x_title: bottom axis title.
        y_title: row axis title.
        top_down: draw row 0 at the top.

    Raises:
        OptionError: the labels do not match the shape of `values`.
    """
    values = np.asarray(values, dtype=float)
    n_rows, n_cols = values.shape
    if len(x_labels) != n_cols or len(y_labels) != n_rows:
        raise OptionError(f"values has shape {values.shape} but got {len(y_labels)} row labels and "
                          f"{len(x_labels)} column labels.")
    hover = _default_hover(values, x_labels, y_labels, text) if hover is None else hover
    fig = go.Figure(_heat_trace(values, text, hover, scale))
    if outline is not None and np.asarray(outline).any():
        fig.add_traces(_outline_traces(np.asarray(outline, dtype=bool)))
    bottom = [short_label(t) for t in x_labels]
    top = None if top_labels is None else [short_label(t) for t in top_labels]
    upright = all(_labels_fit(labels, n_cols) for labels in (bottom, top or []))
    _lay_out(fig, values.shape, bottom, top, upright, _heading(title, legend))
    fig.update_layout(
        xaxis=dict(title=dict(text=plotly_text(x_title))),
        yaxis=dict(ticktext=[short_label(t) for t in y_labels], title=dict(text=plotly_text(y_title)),
                   autorange="reversed" if top_down else None),
    )
    if top is not None:
        _add_top_axis(fig, top, n_cols, upright)
    return fig


def _add_top_axis(fig: go.Figure, top: list[str], n_cols: int, upright: bool) -> None:
    """A second x axis on top, labelled `top`, anchored by an invisible trace so Plotly draws it."""
    fig.add_trace(go.Scatter(x=np.arange(n_cols), y=[None] * n_cols, xaxis="x2", showlegend=False, hoverinfo="skip"))
    fig.update_layout(xaxis2=dict(_tick_axis(top, n_cols, upright=upright), overlaying="x", side="top", matches="x"))


def _heat_trace(values: np.ndarray, text: np.ndarray | None, hover: np.ndarray, scale: ColorScale) -> go.Heatmap:
    """The heatmap trace: colour values, cell text (only up to HOVER_ONLY_AFTER columns) and hover."""
    n_rows, n_cols = values.shape
    z, lo, hi, colorbar = _color_values(values, scale)
    cell_text = None if text is None or n_cols > HOVER_ONLY_AFTER else _cell_text(text, n_cols)
    return go.Heatmap(
        z=z,
        x=np.arange(n_cols),
        y=np.arange(n_rows),
        zmin=lo,
        zmax=hi,
        colorscale=scale.name,
        reversescale=scale.reverse,
        colorbar=colorbar,
        xgap=1,
        ygap=1,
        hoverongaps=False,
        text=cell_text,
        texttemplate="%{text}" if cell_text is not None else None,
        textfont=dict(size=CELL_FONT_PX),
        hovertext=np.asarray(hover, dtype=object),
        hovertemplate="%{hovertext}<extra></extra>",
    )


def _lay_out(fig: go.Figure, shape: tuple[int, int], bottom: list[str], top: list[str] | None, upright: bool,
             heading: str) -> None:
    """Title, axes, margins and height: the margins make room for the heading and the tick labels."""
    n_rows, n_cols = shape
    margin_top = _MARGIN_PX + (_HEADING_LINE_PX * (heading.count("<br>") + 1) if heading else 0)
    margin_top += _label_px(top, upright=upright) if top is not None else 0
    margin_bottom = _AXIS_TITLE_PX + _label_px(bottom, upright=upright)
    fig.update_layout(
        title=dict(text=heading, x=0, xref="paper", xanchor="left", y=1, yref="container", yanchor="top",
                   pad=dict(t=_MARGIN_PX)),
        xaxis=_tick_axis(bottom, n_cols, upright=upright),
        yaxis=dict(tickvals=np.arange(n_rows), range=[-0.5, n_rows - 0.5], automargin=True, showgrid=False,
                   zeroline=False),
        plot_bgcolor="#f4f4f4",
        autosize=True,
        margin=dict(t=margin_top, b=margin_bottom, l=80, r=40),
        height=margin_top + margin_bottom + max(_MIN_PLOT_PX, min(_MAX_PLOT_PX, _ROW_PX * n_rows)),
    )


def _color_values(values: np.ndarray, scale: ColorScale) -> tuple[np.ndarray, float | None, float | None, dict]:
    """The colour values (log10 and clipped as `scale` says), their range and the colour bar."""
    z = values.copy()
    lo, hi = scale.zmin, scale.zmax
    if scale.log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log10(np.where(z > 0, z, np.nan))
        lo = None if lo is None else float(np.log10(lo))
        hi = None if hi is None else float(np.log10(hi))
    if lo is not None or hi is not None:
        z = np.clip(z, lo, hi)
    colorbar: dict[str, object] = dict(title=dict(text=plotly_text(scale.title)))
    if scale.log:
        finite = z[np.isfinite(z)]
        a = lo if lo is not None else (finite.min() if finite.size else 0.0)
        b = hi if hi is not None else (finite.max() if finite.size else 1.0)
        colorbar["tickvals"], colorbar["ticktext"] = _log_ticks(a, b)
    return z, lo, hi, colorbar


def _default_hover(
    values: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], text: np.ndarray | None
) -> np.ndarray:
    """Hover text naming the full column label, the row, the value (and the cell text)."""
    hover = np.empty(values.shape, dtype=object)
    cells = None if text is None else np.asarray(text, dtype=object)
    for (r, c), v in np.ndenumerate(values):
        cell = "" if cells is None else f"<br>{plotly_text(str(cells[r, c]))}"
        hover[r, c] = f"{plotly_text(x_labels[c])}, {plotly_text(y_labels[r])}: {v:.4g}{cell}"
    return hover


def _heading(title: str, legend: str | None) -> str:
    """The wrapped title with its legend line in smaller type under it."""
    head, note = _split_note(title) if legend is None else (title, legend)
    text = wrap_title(head)
    if note:
        small = wrap_title(note, width=int(TITLE_CHARS * 1.3)).replace("<br>", '</span><br><span style="font-size:12px">')
        text += f'<br><span style="font-size:12px">{small}</span>'
    return text


__all__ = [
    "CELL_FONT_PX",
    "HOVER_ONLY_AFTER",
    "SAFE_SCALES",
    "ColorScale",
    "layer_position_heatmap",
    "plotly_text",
    "short_label",
    "wrap_title",
]
