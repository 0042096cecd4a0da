"""Arguments of the corpus commands: `eval-lens`, `train-lens`, `invert-corpus`.

Each runs on one process or under `torchrun --nproc-per-node N -m lens_inversion.cli ...`
(every process reads the same corpus; rank 0 writes the outputs), and resumes from
`--checkpoint` after an interruption.
"""

import argparse

CORPUS_HELP = ("text corpus: .txt files (documents separated by blank lines) or .jsonl files (one JSON object per "
               "line, its text under --text-key)")
TORCHRUN_NOTE = """
data parallel: torchrun --nproc-per-node N -m lens_inversion.cli {command} ...
  (gloo on CPU, NCCL on GPU; every process reads the same --corpus; rank 0 writes the outputs;
   several machines: add --nnodes M --node-rank R --rdzv-endpoint HOST:PORT to torchrun)
"""


def _corpus_common(sub: argparse.ArgumentParser, *, model_help: str, device_help: str) -> None:
    sub.add_argument("--corpus", nargs="+", required=True, metavar="FILE", help=CORPUS_HELP)
    sub.add_argument("--text-key", default="text", help="the text field of .jsonl lines")
    sub.add_argument("--model", default="tiny", help=model_help)
    sub.add_argument("--device", default=None, help=device_help)
    sub.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                     help="floating type of the model's weights")
    sub.add_argument("--json", default=None, metavar="PATH", help="write the numbers as JSON here; - for standard output")
    sub.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="resume from this file after an interruption (written as the job goes)")
    sub.add_argument("--seed", type=int, default=0, help="random seed (shuffling, sampling)")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")


def add_corpus_commands(commands, *, formatter, epilog: str, model_help: str, device_help: str) -> None:
    """Add eval-lens, train-lens and invert-corpus to the subcommand parser."""
    common = {"model_help": model_help, "device_help": device_help}
    ev = commands.add_parser("eval-lens", help="per-layer KL, bits per byte, top-1 agreement of lenses over a corpus",
                             formatter_class=formatter, epilog=TORCHRUN_NOTE.format(command="eval-lens") + epilog)
    _corpus_common(ev, **common)
    ev.add_argument("--lens", nargs="+", default=["logit"], metavar="LENS",
                    help="lenses to evaluate: logit, tuned (the one shipped with an embedded model) or tuned:DIR, "
                         "jacobian or jacobian:FILE")
    ev.add_argument("--packing", default="pack", choices=["pack", "pad"],
                    help="pack: the token stream cut into --seq-len rows; pad: one document per row")
    ev.add_argument("--padding-side", default="right", choices=["right", "left"], help="with --packing pad")
    ev.add_argument("--seq-len", type=int, default=None, help="tokens per row (default: the context, at most 2048)")
    ev.add_argument("--batch-size", type=int, default=None, help="rows per forward pass (default: from a memory bound)")
    ev.add_argument("--max-tokens", type=int, default=None, help="stop after this many tokens")
    ev.add_argument("--out", default="eval-lens.html", metavar="PATH", help="self-contained HTML page to write")

    tr = commands.add_parser("train-lens", help="train a tuned lens on a corpus (tuned-lens file format)",
                             formatter_class=formatter, epilog=TORCHRUN_NOTE.format(command="train-lens") + epilog)
    _corpus_common(tr, **common)
    tr.add_argument("--out", required=True, metavar="DIR", help="directory to save the lens in (config.json, params.pt)")
    tr.add_argument("--steps", type=int, default=250, help="optimiser steps")
    tr.add_argument("--tokens-per-step", type=int, default=2**18, help="tokens per step (a multiple of --seq-len)")
    tr.add_argument("--seq-len", type=int, default=None, help="tokens per chunk (default: the context, at most 2048)")
    tr.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="SGD with Nesterov momentum, or Adam")
    tr.add_argument("--held-out", nargs="+", default=None, metavar="FILE",
                    help="evaluate the trained lens on this text (recorded in its metadata)")

    inv = commands.add_parser("invert-corpus", help="exact-recovery rate of input inversion over a corpus",
                              formatter_class=formatter, epilog=TORCHRUN_NOTE.format(command="invert-corpus") + epilog)
    _corpus_common(inv, **common)
    inv.add_argument("--target", default=None, help="activation to invert (default: the last block's resid_post)")
    inv.add_argument("--method", default="exact", choices=["exact", "embedding", "direct"], help="inversion method")
    inv.add_argument("--prompts", type=int, default=100, help="how many prompts to invert")
    inv.add_argument("--tokens", type=int, default=20, help="tokens per prompt")
    inv.add_argument("--out", default="invert-corpus.html", metavar="PATH", help="self-contained HTML page to write")


__all__ = ["add_corpus_commands"]
