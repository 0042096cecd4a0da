"""What each HTML page the CLI writes says about itself, and the inversion page's text comparison."""

import html
import math

EXPLAIN = {
    "lens": "The logit lens reads every layer's residual stream through the model's own final norm and unembedding, "
            "as if the model stopped there. Each heatmap has one row per layer and one column per prompt position; a "
            "cell compares that layer's next-token distribution with the {compare} (KL divergence: 0 means "
            "identical; rank: where the reference token sits in the layer's guesses, 1 is top). Hover a cell for "
            "its top tokens.",
    "attribute": "Attribution scores how much each prompt token matters for the target ({target}). Gradient × input "
                 "multiplies each token's embedding by the gradient of the target; occlusion replaces one token at "
                 "a time and measures how far the output moves. Tokens are shaded from blue (low) to red (high); the "
                 "bar chart shows the same scores.",
    "ablate": "The ablation sweep replaces the activation at {site} ({ablation} ablation) one layer and one position "
              "at a time and measures how far the output moves ({metric}). Bright cells are the layers and positions "
              "the prediction depends on; dark cells can be removed with little effect.",
    "exact": "Exact inversion recovers the prompt from the activation {target} alone: position by position it tries "
             "every vocabulary token and keeps the one that reproduces the observed activation within a float "
             "tolerance. The table shows the original beside the recovered text, and for each token the distance "
             "reached, the tolerance, the margin to the runner-up and a verdict. 'verified' means it reproduces and "
             "no other token does.",
    "gradient": "Gradient inversion searches by gradient descent ({method}) for an input whose activation at {target} "
                "matches the original prompt's; the plot shows the loss per step. Descent gives no exactness "
                "guarantee, so the verdict below checks whether the decoded tokens really reproduce the activation. "
                "The table shows the original beside the recovered text, token by token.",
}


def token_verdict(report) -> str:
    """One word for how an exact search decided a position."""
    if not report.decided:
        return "not observed"
    if not report.reproduced:
        return "not reproduced"
    return "verified" if report.unique else "ambiguous"


def _number(value: float) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _verdict_html(verdict) -> str:
    if verdict is None:
        return ""
    colour = {"verified": "#1a7f37", "ambiguous": "#9a6700"}.get(verdict.status, "#cf222e")
    return (f"<p class='verdict'><b>Verdict: <span style='color:{colour}'>{html.escape(verdict.status)}</span></b> — "
            f"{html.escape(verdict.reason)}</p>")


def inversion_sections(result, original_tokens: "list[str]", prompt: str) -> list[str]:
    """The verdict, the two texts side by side, and a per-token table (exact evidence when present)."""
    recovered = result.str_tokens[0] if result.str_tokens else []
    reports = {r.position: r for r in getattr(result.trace, "positions", None) or ()}  # exact evidence only
    texts = ("<table class='texts' border='1' style='border-collapse:collapse'><tr><th>original</th>"
             f"<th>recovered</th></tr><tr><td><code>{html.escape(prompt)}</code></td>"
             f"<td><code>{html.escape(result.text)}</code></td></tr></table>")
    head = ["position", "original token", "recovered token", "same"]
    if reports:
        head += ["best distance", "tolerance", "margin", "unique", "verdict"]
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for i in range(max(len(recovered), len(original_tokens))):
        want = original_tokens[i] if i < len(original_tokens) else ""
        got = recovered[i] if i < len(recovered) else ""
        cells = [str(i), repr(want), repr(got), "yes" if want == got else "no"]
        if reports:
            r = reports.get(i)
            cells += ([_number(r.best_distance), _number(r.tolerance), _number(r.margin), "yes" if r.unique else "no",
                       token_verdict(r)] if r else ["—"] * 5)
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    table = f"<table class='tokens' border='1' style='border-collapse:collapse;margin-top:1em'>{''.join(rows)}</table>"
    return [_verdict_html(result.verdict), "<h2>Original and recovered text</h2>", texts, table]


__all__ = ["EXPLAIN", "inversion_sections", "token_verdict"]
