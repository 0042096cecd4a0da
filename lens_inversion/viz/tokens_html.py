"""HTML token highlighting: red (high) through white to blue (low), every string escaped."""

import html
from collections.abc import Sequence

from ..errors import OptionError
from .html import write_page  # the one page writer; imported here for existing callers

LOW = (49, 99, 206)  # blue
MID = (255, 255, 255)
HIGH = (214, 39, 40)  # red


def score_color(value: float, *, signed: bool) -> str:
    """CSS colour of a score: [0, 1] (or [-1, 1] when signed) from blue to red."""
    t = (value + 1) / 2 if signed else value
    t = min(1.0, max(0.0, t))
    a, b, u = (LOW, MID, t * 2) if t < 0.5 else (MID, HIGH, t * 2 - 1)
    r, g, bl = (round(x + (y - x) * u) for x, y in zip(a, b, strict=True))
    return f"rgb({r}, {g}, {bl})"


def _visible(token: str) -> str:
    return html.escape(token.replace("\n", "↵").replace("\t", "⇥"), quote=True) or "&#8203;"


def legend(*, signed: bool, label: str) -> str:
    """A horizontal colour bar with its end labels."""
    stops = [i / 10 for i in range(11)]
    cells = "".join(
        f'<span style="display:inline-block;width:18px;height:12px;background:'
        f'{score_color(s * (2 if signed else 1) - (1 if signed else 0), signed=signed)}"></span>'
        for s in stops
    )
    low = "−1 (against)" if signed else "0 (low)"
    return (
        f'<div class="li-legend" style="font-size:12px;margin:6px 0">{html.escape(label)}: {low} {cells} 1 (high)</div>'
    )


def highlight_tokens(
    str_tokens: Sequence[str],
    scores: Sequence[float],
    *,
    signed: bool = False,
    muted: Sequence[bool] | None = None,
    title: str = "",
    legend_label: str = "attribution",
    predicted_token: str | None = None,
    details: Sequence[str] = (),
) -> str:
    """An HTML fragment: the tokens coloured by score, a legend and the predicted next token.

    Args:
        str_tokens: the tokens as text (escaped here).
        scores: one value per token, in [0, 1] ([-1, 1] when `signed`); values outside clip.
        signed: colour scale centred on zero.
        muted: tokens shown grey and without colour (e.g. an excluded BOS).
        title: heading above the tokens (escaped).
        legend_label: what the colour bar measures.
        details: extra lines shown under the heading (escaped).
        predicted_token: shown after the prompt, boxed.
    """
    if len(scores) != len(str_tokens):
        raise OptionError(f"Got {len(scores)} scores for {len(str_tokens)} tokens; give one score per token.")
    muted = muted or [False] * len(str_tokens)
    spans = []
    for index, (token, score, quiet) in enumerate(zip(str_tokens, scores, muted, strict=True)):
        tip = html.escape(f"{index}: {token!r} = {float(score):.4g}", quote=True)
        style = "color:#999" if quiet else f"background:{score_color(float(score), signed=signed)}"
        spans.append(f'<span class="li-token" title="{tip}" style="{style};white-space:pre">{_visible(token)}</span>')
    parts = [f"<h3>{html.escape(title)}</h3>"] if title else []
    parts += [f'<div style="font-size:12px;color:#555">{html.escape(line)}</div>' for line in details]
    parts.append(legend(signed=signed, label=legend_label))
    text = "".join(spans)
    if predicted_token is not None:
        text += (
            ' <span class="li-predicted" title="predicted next token" style="border:1px dashed #333;'
            f'padding:0 2px;white-space:pre">→ {_visible(predicted_token)}</span>'
        )
    parts.append(f'<div class="li-text" style="font-family:monospace;font-size:15px;line-height:1.9">{text}</div>')
    return '<div class="li-attribution">' + "".join(parts) + "</div>"


__all__ = ["highlight_tokens", "legend", "score_color", "write_page"]
