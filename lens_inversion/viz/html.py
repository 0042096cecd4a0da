"""The one HTML writer behind every `to_html`: self-contained pages that work offline.

Every page is written by `write_page` (UTF-8, `check_destination`), every figure becomes
HTML through `figure_html` (fitted to the page, responsive), and plotly.js is embedded
inline at most once per page (`Figures` remembers whether it is already there). Nothing is
loaded from the network: no CDN script, no external style sheet.
"""

import html
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from ..validation import check_destination
from .heatmap import plotly_text, wrap_title

PAGE_STYLE = "body { font-family: sans-serif; margin: 20px; }"  # the plain page of a single result
GENERATOR = "lens_inversion.viz.html"  # named in every page's <meta name="generator">: which writer wrote it
PLOTLY_CONFIG = {"responsive": True, "displaylogo": False}  # fill the container's width; no plotly logo link


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


def figure_html(figure: go.Figure, *, include_plotlyjs: bool) -> str:
    """One figure as an HTML fragment, fitted to the page; plotly.js inline when `include_plotlyjs`."""
    return pio.to_html(fit_to_page(figure), full_html=False, include_plotlyjs=include_plotlyjs,
                       default_width="100%", config=PLOTLY_CONFIG)


class Figures:
    """Turns the figures of one page into HTML, embedding plotly.js with the first one only."""

    def __init__(self) -> None:
        """A page that has not embedded plotly.js yet."""
        self.plotly_included = False

    def html(self, figure: go.Figure) -> str:
        """`figure` as an HTML fragment (see `figure_html`)."""
        include = not self.plotly_included
        self.plotly_included = True
        return figure_html(figure, include_plotlyjs=include)


def page_html(body: str, *, title: str = "lens_inversion", style: str = PAGE_STYLE) -> str:
    """A complete HTML document around the trusted fragment `body` (the title is escaped)."""
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><meta name='generator' content='{GENERATOR}'>"
        f"<title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )


def write_page(path: "str | Path", body: str, *, title: str = "lens_inversion", style: str = PAGE_STYLE) -> Path:
    """Write `body` (trusted HTML) as a standalone page at `path` (UTF-8); return the path."""
    path = check_destination(path)
    path.write_text(page_html(body, title=title, style=style), encoding="utf-8")
    return path


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
    path = check_destination(path)
    figs = [figures] if isinstance(figures, go.Figure) else list(figures)
    page = Figures()
    header = page_header(heading, prompt=prompt, model=model, explanation=explanation) if heading else ""
    return write_page(path, header + "".join(sections) + "".join(page.html(fig) for fig in figs), title=title)


__all__ = ["Figures", "figure_html", "fit_to_page", "page_header", "page_html", "write_figures_html", "write_page"]
