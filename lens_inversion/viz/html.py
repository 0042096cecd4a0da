"""Write Plotly figures to one self-contained HTML file that works offline."""

import html
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio


def write_figures_html(
    path: "str | Path", figures: "go.Figure | Sequence[go.Figure]", *, title: str = "lens_inversion"
) -> Path:
    """Write `figures` to `path` with plotly.js embedded once (no network needed to view).

    Returns:
        The path written.
    """
    figs = [figures] if isinstance(figures, go.Figure) else list(figures)
    parts = [pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs)]
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["write_figures_html"]
