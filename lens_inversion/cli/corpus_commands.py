"""What the corpus commands do: `eval-lens`, `train-lens`, `invert-corpus`.

Under torchrun every process runs the command; only rank 0 writes the HTML page, the JSON
and the lens directory, so N processes leave one set of outputs.
"""

import argparse
import os
import sys
from pathlib import Path

from ..errors import OptionError
from .commands import STDOUT, _check_out, _model, _status, _unverified

LENS_KINDS = ("logit", "tuned", "jacobian")


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _corpus_paths(files: list[str]) -> list[Path]:
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise OptionError(f"--corpus {str(path)!r} is not an existing file; give .txt or .jsonl files.")
    return paths


def _prepare(args: argparse.Namespace, *, out_is_dir: bool = False):
    from ..models.loader import resolve_source

    corpus = _corpus_paths(args.corpus)
    if not out_is_dir:
        _check_out("--out", args.out)
    _check_out("--json", args.json)
    resolve_source(args.model)
    return _model(args), corpus


def parse_lens(spec: str, model, model_name: str):
    """"logit", "tuned", "tuned:DIR", "jacobian" or "jacobian:FILE" as a lens object."""
    from ..lens.trained import load_lens

    kind, _, where = spec.partition(":")
    if kind not in LENS_KINDS or (kind == "logit" and where):
        raise OptionError(f"--lens {spec!r} is not a lens; choose logit, tuned, tuned:DIR, jacobian or jacobian:FILE.")
    if kind == "logit":
        return "logit"
    return load_lens(where or model_name, kind="tuned" if kind == "tuned" else "jacobian", model=model)


def _write(args: argparse.Namespace, result, figures, *, heading: str, explanation: str) -> None:
    from ..viz.html import write_figures_html
    from .to_json import write_json

    if args.json:
        write_json(args.json, result, command=args.command, corpus=args.corpus, model=args.model)
    path = write_figures_html(args.out, figures, title=heading, heading=heading, prompt=", ".join(args.corpus),
                              model=args.model, explanation=explanation)
    where = "standard output" if args.json == STDOUT else args.json
    print(f"wrote {path}" + (f" and JSON to {where}" if args.json else ""), file=sys.stderr)


def run_eval_lens(args: argparse.Namespace) -> int:
    from ..corpus import evaluate_lens

    model, corpus = _prepare(args)
    lenses = [parse_lens(spec, model, args.model) for spec in args.lens]
    result = evaluate_lens(model, corpus, lenses=lenses, packing=args.packing, padding_side=args.padding_side,
                           seq_len=args.seq_len, batch_size=args.batch_size, max_tokens=args.max_tokens,
                           seed=args.seed, text_key=args.text_key, checkpoint=args.checkpoint,
                           progress=not args.quiet)
    if not _is_main():
        return 0
    print(result, file=sys.stderr)
    _write(args, result, [result.plot(metric="bits_per_byte"), result.plot(metric="kl")],
           heading="Lens evaluation over a corpus",
           explanation=f"Per-row corpus means over {result.tokens:,} tokens: bits per byte of the next token, "
                       "and KL from the model's output.")
    return _status(_unverified([], result.checks))


def run_train_lens(args: argparse.Namespace) -> int:
    from ..lens.tuned import TunedLens

    model, corpus = _prepare(args, out_is_dir=True)
    held_out = None if args.held_out is None else _corpus_paths(args.held_out)
    lens = TunedLens.train(model, corpus, steps=args.steps, tokens_per_step=args.tokens_per_step,
                           seq_len=args.seq_len, optimizer=args.optimizer, seed=args.seed, text_key=args.text_key,
                           checkpoint=args.checkpoint, held_out=held_out, progress=not args.quiet)
    if not _is_main():
        return 0
    saved = lens.save(args.out)
    if args.json:
        from .to_json import write_json

        write_json(args.json, lens.metadata, command=args.command, corpus=args.corpus, model=args.model)
    print(f"wrote the tuned lens to {saved}", file=sys.stderr)
    return 0


def run_invert_corpus(args: argparse.Namespace) -> int:
    from ..corpus.invert_job import invert_corpus

    model, corpus = _prepare(args)
    result = invert_corpus(model, corpus, target=args.target, method=args.method, n_prompts=args.prompts,
                           n_tokens=args.tokens, seed=args.seed, text_key=args.text_key,
                           checkpoint=args.checkpoint, progress=not args.quiet)
    if not _is_main():
        return 0
    print(result, file=sys.stderr)
    _write(args, result, [result.plot()], heading="Inversion over a corpus",
           explanation=f"{args.method} inversion of {result.prompts} prompts of {result.n_tokens} tokens.")
    return 0


CORPUS_COMMANDS = {"eval-lens": run_eval_lens, "train-lens": run_train_lens, "invert-corpus": run_invert_corpus}

__all__ = ["CORPUS_COMMANDS", "parse_lens"]
