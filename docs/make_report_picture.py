"""Render the README's picture of the report with headless Chromium (Debian package `chromium`).

Run `python docs/make_report_picture.py` (or `make picture`): writes docs/img/report.png.
"""

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import lens_inversion as li

HERE = Path(__file__).parent
PROMPT = "The sky is blue. The grass is green. The sun is"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("No Chromium found: install Debian's `chromium` package.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE / "img" / "report.png"))
    parser.add_argument("--height", type=int, default=1700)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        li.report(li.load_model("tiny"), PROMPT, path=html, progress=False)
        subprocess.run(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size=1280,{args.height}", "--virtual-time-budget=10000",
             f"--screenshot={Path(args.out).resolve()}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
