"""Render the pictures of the README and the docs with headless Chromium (Debian package `chromium`).

Run `python docs/make_pictures.py` (or `make pictures`): writes docs/img/*.png from the
embedded model. Each picture is the HTML the library itself writes, screenshotted.
"""

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import lens_inversion as li
from lens_inversion.viz.html import write_figures_html

IMG = Path(__file__).parent / "img"
PROMPT = "The sky is blue. The grass is green. The sun is"


def chromium() -> str:
    """The path of a Chromium executable on PATH; exit with an install hint when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("No Chromium found: install Debian's `chromium` package.")


def screenshot(html: Path, png: Path, *, width: int, height: int) -> None:
    """Screenshot `html` into `png` at `width` × `height` pixels with headless Chromium."""
    subprocess.run(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={width},{height}", "--virtual-time-budget=10000", f"--screenshot={png.resolve()}",
         html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    print(f"wrote {png}")


LENS_PROMPT = "The sky is blue. Paris is the capital of France. The cat says meow."  # docs/trained_lenses.md


def corpus_picture(model, tmp: Path, out: Path) -> None:
    """docs/corpus_scale.md: bits per byte per row of the logit and tuned lenses on the held-out text."""
    held_out = Path(li.__file__).parent / "models" / "assets" / "tiny" / "heldout.txt"
    evaluation = li.evaluate_lens(model, held_out, lenses=["logit", li.load_lens("tiny", model=model)],
                                  seq_len=128, progress=False)
    write_figures_html(tmp / "corpus.html", evaluation.plot(metric="bits_per_byte"))
    screenshot(tmp / "corpus.html", out / "corpus_bits_per_byte.png", width=900, height=420)


def main() -> None:
    """Render every picture of the README and the docs from the embedded model into `--out`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=IMG)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = li.load_model("tiny")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        report = li.report(model, PROMPT, path=tmp / "report.html", progress=False)
        screenshot(report.path, args.out / "report.png", width=1280, height=1700)
        report.attributions["combined"].to_html(tmp / "attribution.html")
        screenshot(tmp / "attribution.html", args.out / "attribution.png", width=1100, height=260)
        write_figures_html(tmp / "ablation.html", report.ablation.plot(log=True))
        screenshot(tmp / "ablation.html", args.out / "ablation.png", width=1000, height=480)
        write_figures_html(tmp / "inversion.html", report.inversion_figure())
        screenshot(tmp / "inversion.html", args.out / "inversion.png", width=900, height=400)
        lenses = [li.load_lens("tiny", kind=kind, model=model) for kind in ("tuned", "jacobian")]
        comparison = li.compare_lenses(model, LENS_PROMPT, lenses=lenses)
        write_figures_html(tmp / "trained_lenses.html", comparison.plot())
        screenshot(tmp / "trained_lenses.html", args.out / "trained_lenses.png", width=900, height=420)
        trajectory = li.token_trajectory(model, "The capital of France is", multi_token="first",
                                         tokens=[" Paris", " France", " London", " París"])
        write_figures_html(tmp / "token_trajectory.html", trajectory.plot())
        screenshot(tmp / "token_trajectory.html", args.out / "token_trajectory.png", width=900, height=470)
        corpus_picture(model, tmp, args.out)


if __name__ == "__main__":
    main()
