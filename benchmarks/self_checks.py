"""Cost of the fast-path self-checks on the first call that needs them, in one run.

    python benchmarks/self_checks.py [--model tiny] [--repeats 3]

Each check runs once per model (and dtype, device and weights); the first call on a model
pays for the checks it uses. For a typical exact inversion, occlusion and ablation sweep
this prints the time of a first call (verdicts forgotten) and of a later call (verdicts
cached), best of `--repeats` each, and the checks' share of the first call.
"""

import argparse
import time

import torch

import lens_inversion as li
from lens_inversion.hooks import adapter_for, selfcheck
from lens_inversion.hooks.fast_paths import forget_probes, run_all

PROMPT = "The bounty hunter tracked his mark across the desert. The sky is blue and the grass is green."


def _best(fn, repeats: int, before=lambda: None) -> float:
    best = float("inf")
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = li.load_model(args.model, device="cpu")
    adapter = adapter_for(model)

    def fresh():
        selfcheck.forget(model)
        forget_probes(model)

    every = _best(lambda: run_all(adapter, force=True), args.repeats, fresh)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    calls = {
        "exact inversion (last block)": lambda: li.invert(model, PROMPT, target=last, method="exact", progress=False, seed=0),
        "occlusion": lambda: li.attribute(model, PROMPT, method="occlusion", progress=False),
        "ablation sweep": lambda: li.ablation_sweep(model, PROMPT, progress=False),
    }
    print(f"{args.model}: every self-check {every * 1000:.0f} ms (doctor; a call runs only those it uses)")
    for label, call in calls.items():
        repeats = 1 if "exact" in label else args.repeats
        first = _best(call, repeats, fresh)
        later = _best(call, repeats)
        share = max(0.0, first - later) / first
        print(f"  {label:30s} first {first:6.2f} s   later {later:6.2f} s   checks {100 * share:4.1f}% of the first call")
    fresh()


if __name__ == "__main__":
    main()
