"""What each `lens-inversion` subcommand does: load the model, run, write HTML and JSON."""

import argparse
import sys
from pathlib import Path

from ..errors import OptionError
from ..viz.html import write_figures_html
from .doctor import run_doctor
from .to_json import write_json


def _model(args: argparse.Namespace):
    import torch

    from ..models import load_model

    return load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype))


def _check_out(path: "str | None") -> None:
    if path is not None and not Path(path).resolve().parent.exists():
        raise OptionError(f"Cannot write {path!r}: its folder does not exist.")


def _finish(args: argparse.Namespace, result, html_path: Path, **meta) -> None:
    if args.json:
        write_json(args.json, result, command=args.command, prompt=args.prompt, model=args.model, **meta)
    print(f"wrote {html_path}" + (f" and {args.json}" if args.json else ""), file=sys.stderr)


def _prepare(args: argparse.Namespace):
    if not args.prompt.strip():
        raise OptionError("The prompt is empty; give some text, e.g. \"The sky is blue.\"")
    _check_out(args.out)
    _check_out(args.json)
    return _model(args)


def run_report(args: argparse.Namespace) -> None:
    from ..report import report

    model = _prepare(args)
    result = report(model, args.prompt, path=args.out, inversion_layers=args.layers, gradient_steps=args.steps,
                    ablation=args.ablation, seed=args.seed, progress=not args.quiet)
    _finish(args, result, result.path)


def run_lens(args: argparse.Namespace) -> None:
    from ..lens import logit_lens

    model = _prepare(args)
    result = logit_lens(model, args.prompt, compare=args.compare, rows=args.rows, top_k=args.top_k,
                        progress=not args.quiet)
    path = result.to_html(args.out, metrics=tuple(args.metric))
    _finish(args, result, path)


def run_invert(args: argparse.Namespace) -> None:
    from ..inversion import invert

    model = _prepare(args)
    options = dict(seed=args.seed, progress=not args.quiet)
    if args.method != "exact":
        options.update(steps=args.steps, loss=args.loss)
    result = invert(model, args.prompt, target=args.target, method=args.method, **options)
    print(result.text)
    figures = [result.plot()]
    path = write_figures_html(args.out, figures, title=f"Inversion of {args.target}: {result.text}")
    _finish(args, result, path)


def run_attribute(args: argparse.Namespace) -> None:
    from ..attribution import attribute

    model = _prepare(args)
    target = int(args.target) if args.target is not None and args.target.lstrip("-").isdigit() else args.target
    baseline = int(args.baseline) if args.baseline.isdigit() else args.baseline
    result = attribute(model, args.prompt, method=args.method, target=target, metric=args.metric,
                       baseline=baseline, progress=not args.quiet)
    path = result.to_html(args.out)
    _finish(args, result, path)


def run_ablate(args: argparse.Namespace) -> None:
    from ..ablation import ablation_sweep

    model = _prepare(args)
    reference = None if args.ablation == "zero" else (args.reference or args.prompt)
    result = ablation_sweep(model, args.prompt, ablation=args.ablation, site=args.site, metric=args.metric,
                            reference=reference, seed=args.seed, progress=not args.quiet)
    path = result.to_html(args.out)
    _finish(args, result, path)


COMMANDS = {
    "report": run_report,
    "lens": run_lens,
    "invert": run_invert,
    "attribute": run_attribute,
    "ablate": run_ablate,
    "doctor": run_doctor,
}

__all__ = ["COMMANDS"]
