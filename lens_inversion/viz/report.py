"""Assemble figures and HTML fragments into one self-contained, offline HTML report."""

import html
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from ..validation import check_destination
from .heatmap import plotly_text, wrap_title

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .3rem; margin-top: 2.5rem; }
table.li-table { border-collapse: collapse; margin: 1rem 0; }
table.li-table td, table.li-table th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
.li-note { color: #555; font-size: .9rem; }
tr.li-failed td { background: #fde8e8; color: #9b1c1c; } tr.li-warn td { background: #fff6e0; color: #7a5200; }
"""

ROW_CLASSES = {"failed": "li-failed", "warn": "li-warn", "ok": ""}


def fit_to_page(figure: go.Figure) -> go.Figure:
    """A copy of `figure` that takes the page's width, with a wrapped title and literal category labels.

    Figures not built by `layer_position_heatmap` (the ablation heatmap, bar charts) get
    the same page rules: no fixed width, titles wrapped at word boundaries, and string
    categories of heatmaps escaped so a token such as `<b>` shows as written.
    """
    fig = go.Figure(figure)
    fig.update_layout(width=None, autosize=True)
    title = fig.layout.title.text
    if title and "<br>" not in title:  # titles with <br> were laid out by their builder
        fig.update_layout(title=dict(text=wrap_title(title)))
    for trace in fig.data:
        if trace.type == "heatmap":
            for axis in ("x", "y"):
                labels = getattr(trace, axis)
                if labels is not None and all(isinstance(v, str) for v in labels):
                    trace[axis] = [plotly_text(v) for v in labels]
    return fig


@dataclass
class ReportBuilder:
    """Collects sections of figures, HTML fragments and tables; writes one HTML file."""

    title: str
    parts: list[str] = field(default_factory=list)
    _plotly_included: bool = False

    def heading(self, text: str, *, note: str = "") -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        if note:
            self.parts.append(f'<p class="li-note">{html.escape(note)}</p>')

    def figure(self, figure: go.Figure) -> None:
        """Append a figure fitted to the page (see `fit_to_page`); plotly.js is embedded once, inline."""
        include = not self._plotly_included
        self._plotly_included = True
        self.parts.append(
            pio.to_html(fit_to_page(figure), full_html=False, include_plotlyjs=include, default_width="100%",
                        config={"responsive": True, "displaylogo": False})
        )

    def fragment(self, raw_html: str) -> None:
        """Append HTML produced by our own escaping code (never raw user text)."""
        self.parts.append(raw_html)

    def table(self, header: list[str], rows: list[list[object]], *, marks: "list[str] | None" = None) -> None:
        """A table of escaped cells; `marks` gives each row "ok", "warn" (amber) or "failed" (red)."""
        marks = marks or ["ok"] * len(rows)
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            (f'<tr class="{ROW_CLASSES[mark]}">' if ROW_CLASSES[mark] else "<tr>")
            + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row, mark in zip(rows, marks, strict=True)
        )
        self.parts.append(f'<table class="li-table"><tr>{head}</tr>{body}</table>')

    def to_html(self) -> str:
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            + "\n".join(self.parts)
            + "</body></html>"
        )

    def write(self, path: "str | Path") -> Path:
        path = check_destination(path)
        path.write_text(self.to_html(), encoding="utf-8")
        return path
