"""`lens-inversion doctor`: versions, and every fast path's self-check on the embedded models."""

import argparse
import warnings


def _check_model(name: str, device: "str | None") -> tuple[list, str | None]:
    """The verdicts of every self-check on one model, or the reason it could not load."""
    from ..hooks import adapter_for, preserved
    from ..hooks.fast_paths import run_all
    from ..models import load_model

    try:
        model = load_model(name, device=device)
    except Exception as error:  # report and go on: a missing model is a failure, not a crash
        return [], f"{type(error).__name__}: {error}"
    with warnings.catch_warnings(), preserved(model):
        warnings.simplefilter("ignore")  # each failure is printed in the table below
        return run_all(adapter_for(model)), None


def run_doctor(args: argparse.Namespace) -> int:
    """Print versions and a pass / fell back / failed line per check; 1 if anything did not pass."""
    from ..hooks.selfcheck import versions
    from ..models.loader import EMBEDDED

    for package, version in versions().items():
        print(f"{package:17s} {version}")
    names = [n for n, path in EMBEDDED.items() if path.exists()] + ([args.model] if args.model else [])
    healthy = True
    for name in names:
        verdicts, problem = _check_model(name, args.device)
        print(f"\n{name}")
        if problem:
            print(f"  could not load: {problem}")
            healthy = False
        for verdict in verdicts:
            mark = "ok  " if verdict.passed else ("n/a " if verdict.healthy else "FAIL")
            print(f"  {mark} {verdict.name:20s} {verdict.status:11s} max |Δ| {verdict.max_error:.1e} "
                  f"(tolerance {verdict.tolerance:.1e}){verdict.detail}  {verdict.description}")
            healthy = healthy and verdict.healthy
    print("\nall self-checks passed" if healthy else "\nsome self-checks failed: fast paths fall back to the reference path")
    return 0 if healthy else 1


__all__ = ["run_doctor"]
