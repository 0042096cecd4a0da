"""Write Plotly figures to one self-contained HTML file that works offline."""

import html
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from ..validation import check_destination


def page_header(heading: str, *, prompt: "str | None" = None, model: "str | None" = None,
                explanation: "str | None" = None) -> str:
    """The heading, prompt, model and one explanatory paragraph that open a page (all escaped)."""
    parts = [f"<h1>{html.escape(heading)}</h1>"]
    facts = [(label, value) for label, value in (("Prompt", prompt), ("Model", model)) if value is not None]
    if facts:
        rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{label}</th>"
                       f"<td><code>{html.escape(str(value))}</code></td></tr>" for label, value in facts)
        parts.append(f"<table class='facts'>{rows}</table>")
    if explanation:
        parts.append(f"<p class='explanation' style='max-width:60em'>{html.escape(explanation)}</p>")
    return "".join(parts)


def write_figures_html(
    path: "str | Path",
    figures: "go.Figure | Sequence[go.Figure]",
    *,
    title: str = "lens_inversion",
    heading: "str | None" = None,
    prompt: "str | None" = None,
    model: "str | None" = None,
    explanation: "str | None" = None,
    sections: Sequence[str] = (),
) -> Path:
    """Write `figures` to `path` with plotly.js embedded once (no network needed to view).

    With `heading`, the page opens with it, the prompt, the model and the `explanation`
    paragraph, so a saved file says what it shows; `sections` are trusted HTML fragments
    placed before the figures.

    Returns:
        The path written.
    """
    figs = [figures] if isinstance(figures, go.Figure) else list(figures)
    from .report import fit_to_page

    parts = [pio.to_html(fit_to_page(fig), full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs)]
    header = page_header(heading, prompt=prompt, model=model, explanation=explanation) if heading else ""
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:sans-serif;margin:20px'>{header}{''.join(sections)}{''.join(parts)}</body></html>"
    )
    path = check_destination(path)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["page_header", "write_figures_html"]
