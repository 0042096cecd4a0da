"""Time of `li.report` on a 12-token prompt of the embedded model, per section, on one thread.

    python -m benchmarks.report [--model tiny] [--threads 1]

Printed: the report's own timings (`ReportResult.timings`) at the shipped settings
(gradient inversion: at most 100 steps, stopped early on the shifted-input yardstick) and,
in the same run, at the previous settings (200 steps, no early stop), with the ratio.
The first call also pays for the self-checks (once per model); both runs start fresh.
"""

import argparse
import time
import warnings

import torch

import lens_inversion as li
from lens_inversion.hooks import adapter_for, selfcheck
from lens_inversion.hooks.fast_paths import forget_probes

PROMPT = "The sky is blue and the grass is green. The"  # 12 tokens with the BOS on the embedded tokenizer


def _run(model, path, **options) -> tuple[float, dict[str, float]]:
    selfcheck.forget(model)
    forget_probes(model)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = li.report(model, PROMPT, path=path, progress=False, **options)
    return time.perf_counter() - started, result.timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="/tmp/benchmark-report.html")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = li.load_model(args.model, device="cpu")
    n_tokens = adapter_for(model).prompt(PROMPT).tokens.shape[1]
    shipped, sections = _run(model, args.out)
    old, _ = _run(model, args.out, gradient_steps=200, gradient_early_stop=False)
    print(f"{args.model}, {n_tokens}-token prompt, {args.threads} thread(s)")
    for label, seconds in sections.items():
        print(f"  {label:40s} {seconds:6.2f} s")
    print(f"report total {shipped:.2f} s (gradient steps ≤ 100, early stop); previous settings (200 steps, "
          f"no early stop) {old:.2f} s: {old / shipped:.2f}× faster")


if __name__ == "__main__":
    main()
