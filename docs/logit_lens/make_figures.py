"""Render the logit-lens pictures of docs/logit_lens.md as static PNGs (matplotlib).

The interactive versions come from `lens.plot()` / `lens.to_html()`; this script only
draws the same grid (top-1 token in each cell, outlines where it equals the final top-1,
input tokens below, true next tokens above with `*` where the model is right) for the docs.

Run: python docs/logit_lens/make_figures.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import lens_inversion as li  # noqa: E402
from lens_inversion.lens import logit_lens  # noqa: E402

HERE = Path(__file__).parent
PROMPTS = {"sky": "The sky is blue.", "plasma": "Plasma glows in the dark. Plasma glows in the dark."}


VISIBLE = {" ": "␣", "\n": "↵", "\r": "\\r", "\t": "\\t", "$": r"\$"}


def show(token: str) -> str:
    r"""Make whitespace and control bytes visible (␣, ↵, \r, \t, \xNN) and escape `$`, so matplotlib draws the token literally."""
    return "".join(VISIBLE.get(ch, ch if ch.isprintable() else f"\\x{ord(ch):02x}") for ch in token)


def draw(lens, metric: str, path: Path) -> None:
    """Draw one lens grid coloured by `metric` ("kl" or "rank"), each cell's top-1 token written in, as a PNG at `path`."""
    values = getattr(lens, metric).numpy()
    n_rows, n_cols = values.shape
    if metric == "rank":
        norm, cmap, label = LogNorm(1, 1000), "viridis_r", "rank (log, clipped at 1000)"
        values = np.clip(values, 1, 1000)
    else:
        top = min(30.0, float(np.nanmax(values)) or 1.0)
        norm, cmap, label = Normalize(0, top), "viridis_r", f"KL (nats, clipped at {top:.3g})"
    word = "final top-1" if lens.compare == "final" else "input token"
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n_cols, 1.4 + 0.5 * n_rows), dpi=90)
    image = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap, norm=norm)
    top1 = lens.top_tokens[..., 0]
    matches = lens.matches_final.numpy()
    for r in range(n_rows):
        for c in range(n_cols):
            rgba = image.cmap(image.norm(values[r, c]))
            colour = "black" if 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5 else "white"
            ax.text(c, r, show(lens.token_str(int(top1[r, c]))), ha="center", va="center", fontsize=7, color=colour)
            if matches[r, c]:
                for colour, width in (("white", 3.0), ("black", 1.2)):
                    box = Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=width)
                    ax.add_patch(box)
    ax.set_xticks(range(n_cols), [show(t) for t in lens.str_tokens], rotation=60, fontsize=8)
    ax.set_yticks(range(n_rows), lens.row_labels, fontsize=8)
    top_axis = ax.secondary_xaxis("top")
    nxt = [show(t) + ("*" if ok else "") for t, ok in zip(lens.next_str_tokens, lens.correct.tolist(), strict=True)]
    top_axis.set_xticks(range(n_cols), nxt, rotation=60, fontsize=8)
    fig.colorbar(image, ax=ax, label=label, pad=0.01)
    what = f"KL({lens.compare} ‖ row)" if metric == "kl" else f"rank of the {word}"
    ax.set_title(f"{what}; outlined: top-1 = final top-1", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    """Write the KL and rank pictures of every prompt, against the final and the input tokens, next to this script."""
    torch.set_num_threads(1)
    model = li.load_model("tiny")
    for name, text in PROMPTS.items():
        for compare in ("final", "input"):
            lens = logit_lens(model, text, compare=compare, progress=False)
            for metric in ("kl", "rank"):
                draw(lens, metric, HERE / f"{name}_{metric}_{compare}.png")


if __name__ == "__main__":
    main()
