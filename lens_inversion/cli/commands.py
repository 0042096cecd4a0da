"""What each `lens-inversion` subcommand does: load the model, run, write HTML and JSON.

Heavy packages (torch, transformers, plotly) are imported inside the commands, so that
`--help` and option errors stay fast. Each command returns its exit status.
"""

import argparse
import sys
import warnings
from pathlib import Path

from ..errors import OptionError
from .doctor import run_doctor

STDOUT = "-"
NOT_VERIFIED = 3  # finished, but an exact inversion or a self-check did not pass


def _model(args: argparse.Namespace):
    from ..models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype)


def _check_out(option: str, path: "str | None") -> None:
    if path == STDOUT:
        if option == "--out":
            raise OptionError("--out - is not supported: the HTML page embeds plotly.js; give a file name "
                              "(e.g. --out page.html), or use --json - for the numbers on standard output.")
        return
    if path is not None and not Path(path).resolve().parent.exists():
        raise OptionError(f"Cannot write {path!r}: its folder does not exist.")


def _prepare(args: argparse.Namespace):
    """Check the prompt, the output paths and the model name before anything heavy loads."""
    from ..models.loader import resolve_source

    if not args.prompt.strip():
        raise OptionError("The prompt is empty; give some text, e.g. \"The sky is blue.\"")
    _check_out("--out", args.out)
    _check_out("--json", args.json)
    resolve_source(args.model)  # a typo fails here, before torch is imported
    return _model(args)


def _finish(args: argparse.Namespace, result, html_path: Path, **meta) -> None:
    """Write the JSON (to a file or standard output) and say what was written, on stderr."""
    if args.json:
        from .to_json import write_json

        write_json(args.json, result, command=args.command, prompt=args.prompt, model=args.model, **meta)
    where = "standard output" if args.json == STDOUT else args.json
    print(f"wrote {html_path}" + (f" and JSON to {where}" if args.json else ""), file=sys.stderr)


def _page(args: argparse.Namespace, figures, *, heading: str, explanation: str, sections=()) -> Path:
    from ..viz.html import write_figures_html

    return write_figures_html(args.out, figures, title=heading, heading=heading, prompt=args.prompt, model=args.model,
                              explanation=explanation, sections=sections)


def _unverified(inversions, checks) -> "str | None":
    """Why the run is not verified (an exact inversion or a self-check), or None when it is."""
    for result in inversions:
        if result.method == "exact" and (result.verdict is None or not result.verdict.verified):
            return f"exact inversion of {', '.join(result.targets)} is {result.verdict or 'not verified (no verdict)'}"
    bad = [c for c in checks if c.status != "pass"]
    if bad:
        return "self-check " + "; ".join(f"{c.name} {c.status}{c.detail and ' ' + c.detail}" for c in bad)
    return None


def _status(reason: "str | None") -> int:
    if reason is None:
        return 0
    print(f"lens-inversion: not verified: {reason}", file=sys.stderr)
    return NOT_VERIFIED


def run_report(args: argparse.Namespace) -> int:
    model = _prepare(args)  # first: a bad option fails before torch loads
    from ..inversion import InversionWarning
    from ..report import report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InversionWarning)  # the exit status and one stderr line say it instead
        result = report(model, args.prompt, path=args.out, inversion_layers=args.layers, gradient_steps=args.steps,
                        ablation=args.ablation, seed=args.seed, progress=not args.quiet)
    _finish(args, result, result.path)
    return _status(_unverified([row.result for row in result.inversions], result.checks))


def run_lens(args: argparse.Namespace) -> int:
    model = _prepare(args)  # first: a bad option fails before torch loads
    from ..lens import logit_lens
    from .pages import EXPLAIN

    result = logit_lens(model, args.prompt, compare=args.compare, rows=args.rows, top_k=args.top_k,
                        progress=not args.quiet)
    reference = "model's final output" if args.compare == "final" else "input token at the next position"
    path = _page(args, [result.plot(metric=m) for m in args.metric], heading=f"Logit lens ({args.compare})",
                 explanation=EXPLAIN["lens"].format(compare=reference))
    _finish(args, result, path)
    return 0


def run_invert(args: argparse.Namespace) -> int:
    model = _prepare(args)  # first: a bad option fails before torch loads
    from ..inversion import InversionWarning, invert
    from .pages import EXPLAIN, inversion_sections

    options = dict(seed=args.seed, progress=not args.quiet)
    if args.method != "exact":
        options.update(steps=args.steps, loss=args.loss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InversionWarning)  # reported below as one line and the exit status
        result = invert(model, args.prompt, target=args.target, method=args.method, **options)
    print(result.text, file=sys.stderr if args.json == STDOUT else sys.stdout)
    exact = args.method == "exact"
    original = [model.tokenizer.decode([t]) for t in result.true_tokens[0].tolist()] if result.true_tokens is not None else []
    path = _page(args, [] if exact else [result.plot()], heading=f"{args.method} inversion of {args.target}",
                 explanation=EXPLAIN["exact" if exact else "gradient"].format(target=args.target, method=args.method),
                 sections=inversion_sections(result, original, args.prompt))
    _finish(args, result, path)
    if not exact and result.verdict is not None:
        print(f"lens-inversion: verdict: {result.verdict}", file=sys.stderr)
    return _status(_unverified([result] if exact else [], result.checks))


def run_attribute(args: argparse.Namespace) -> int:
    model = _prepare(args)  # first: a bad option fails before torch loads
    from ..attribution import attribute
    from .pages import EXPLAIN

    answer = int(args.answer) if args.answer is not None and args.answer.lstrip("-").isdigit() else args.answer
    baseline = int(args.baseline) if args.baseline.isdigit() else args.baseline
    result = attribute(model, args.prompt, method=args.method, answer=answer, metric=args.metric,
                       baseline=baseline, progress=not args.quiet)
    path = _page(args, [result.plot()], heading=f"Attribution ({args.method})", sections=[result.html()],
                 explanation=EXPLAIN["attribute"].format(target=result.target))
    _finish(args, result, path)
    return 0


def run_ablate(args: argparse.Namespace) -> int:
    model = _prepare(args)  # first: a bad option fails before torch loads
    from ..ablation import ablation_sweep
    from .pages import EXPLAIN

    reference = None if args.ablation == "zero" else (args.prompt if args.reference is None else args.reference)
    metric = "cross_entropy" if args.metric == "loss" else args.metric  # the old spelling of the loss
    result = ablation_sweep(model, args.prompt, ablation=args.ablation, target=args.target, metric=metric,
                            reference=reference, seed=args.seed, progress=not args.quiet)
    path = _page(args, [result.plot()], heading=f"Ablation sweep ({args.ablation}, {args.target})",
                 explanation=EXPLAIN["ablate"].format(site=args.target, ablation=args.ablation, metric=metric))
    _finish(args, result, path)
    return 0


COMMANDS = {
    "report": run_report,
    "lens": run_lens,
    "invert": run_invert,
    "attribute": run_attribute,
    "ablate": run_ablate,
    "doctor": run_doctor,
}

__all__ = ["COMMANDS", "NOT_VERIFIED"]
