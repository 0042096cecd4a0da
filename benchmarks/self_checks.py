"""Cost of the fast-path self-checks against the calls that rely on them, in one run.

    python benchmarks/self_checks.py [--model tiny]

Each check runs once per model; the first call on a model pays for it. Printed: the time
of all checks, and of a typical exact inversion, occlusion and ablation sweep on a cached
model, with the checks' share of each first call.
"""

import argparse
import time

import torch

import lens_inversion as li
from lens_inversion.hooks import adapter_for, selfcheck
from lens_inversion.hooks.fast_paths import run_all

PROMPT = "The bounty hunter tracked his mark across the desert. The sky is blue and the grass is green."


def _seconds(fn, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = li.load_model(args.model, device="cpu")
    adapter = adapter_for(model)
    checks = _seconds(lambda: run_all(adapter, force=True))
    calls = {
        "exact inversion (last block)": lambda: li.invert(
            model, PROMPT, target=f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", method="exact", progress=False, seed=0),
        "occlusion": lambda: li.attribute(model, PROMPT, method="occlusion", progress=False),
        "ablation sweep": lambda: li.ablation_sweep(model, PROMPT, progress=False),
    }
    print(f"{args.model}: all self-checks {checks * 1000:.0f} ms (once per model)")
    for label, call in calls.items():
        seconds = _seconds(call, repeats=1 if "exact" in label else 3)
        print(f"  {label:30s} {seconds:7.2f} s   checks = {100 * checks / (checks + seconds):.1f}% of a first call")
    selfcheck.forget(model)


if __name__ == "__main__":
    main()
