"""Assemble figures and HTML fragments into one self-contained, offline HTML report (through `viz.html`)."""

import html
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from .html import Figures, fit_to_page, page_html, write_page

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .3rem; margin-top: 2.5rem; }
table.li-table { border-collapse: collapse; margin: 1rem 0; }
table.li-table td, table.li-table th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
.li-note { color: #555; font-size: .9rem; }
tr.li-failed td { background: #fde8e8; color: #9b1c1c; } tr.li-warn td { background: #fff6e0; color: #7a5200; }
"""

ROW_CLASSES = {"failed": "li-failed", "warn": "li-warn", "ok": ""}


@dataclass
class ReportBuilder:
    """Collects sections of figures, HTML fragments and tables; writes one HTML file."""

    title: str
    parts: list[str] = field(default_factory=list)
    _figures: Figures = field(default_factory=Figures)

    def heading(self, text: str, *, note: str = "") -> None:
        """Start a section: an <h2> heading, with an optional note paragraph under it."""
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        if note:
            self.parts.append(f'<p class="li-note">{html.escape(note)}</p>')

    def figure(self, figure: go.Figure) -> None:
        """Append a figure fitted to the page (see `fit_to_page`); plotly.js is embedded once, inline."""
        self.parts.append(self._figures.html(figure))

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
        """The whole page as one HTML document."""
        return page_html(self._body(), title=self.title, style=_STYLE)

    def _body(self) -> str:
        return f"<h1>{html.escape(self.title)}</h1>" + "\n".join(self.parts)

    def write(self, path: "str | Path") -> Path:
        """Write the page to `path` (see `viz.html.write_page`); return the path."""
        return write_page(path, self._body(), title=self.title, style=_STYLE)


__all__ = ["ROW_CLASSES", "ReportBuilder", "fit_to_page"]
