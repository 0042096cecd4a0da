"""Argument parsing for `lens-inversion`: one subcommand per capability."""

import argparse

from .corpus_parser import add_corpus_commands

DESCRIPTION = """\
Logit lens, input inversion, attribution and ablation for TransformerLens models,
written as self-contained HTML (and JSON of the numbers with --json).

examples:
  lens-inversion report "The sky is blue." --out report.html
  lens-inversion lens "The sky is blue." --compare input --metric rank --out lens.html
  lens-inversion invert "The sky is blue." --target "resid_post.2[:, 1:, :]" --method exact
  lens-inversion attribute "The sky is blue. The grass is" --method occlusion --json attr.json
  lens-inversion ablate "The sky is blue." --ablation mean --metric kl --out ablation.html
  lens-inversion report "Hello" --model ./my-hf-model-dir   (a local Hugging Face directory)
  lens-inversion eval-lens --corpus held_out.txt --lens logit tuned --json eval.json
  torchrun --nproc-per-node 2 -m lens_inversion.cli eval-lens --corpus big.jsonl   (data parallel)
  lens-inversion doctor    (versions and self-checks: run it when numbers look wrong)
  lens-inversion lens "The sky is blue." --json - | jq .result.kl   (JSON on standard output)
"""

EPILOG = """exit status:
  0  success
  2  user error (bad option, unknown model or device, unwritable path), one line on stderr
  3  finished but not verified: an exact inversion (invert --method exact, or report) that is
     not verified, or a self-check that fell back or failed; the reason is one line on stderr
  130  interrupted (Ctrl-C)
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show every option's default."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line format (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"lens-inversion: error: {message} (see {self.prog} --help)\n")


MODEL_HELP = ('"tiny", "tiny-untrained", "tiny-llama" (built in), a local Hugging Face model directory '
              "(config.json, weights, tokenizer files), or a hub id owner/name (needs internet or the local cache)")
DEVICE_HELP = "cpu, cuda, cuda:1, mps... (default: cuda when available, else cpu)"


def _common(sub: argparse.ArgumentParser, *, out: str) -> None:
    sub.add_argument("prompt", help="the prompt text")
    sub.add_argument("--model", default="tiny", help=MODEL_HELP)
    sub.add_argument("--device", default=None, help=DEVICE_HELP)
    sub.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                     help="floating type of the model's weights (float32 is the reference; half types are faster, "
                          "less exact)")
    sub.add_argument("--out", default=out, metavar="PATH", help="self-contained HTML file to write (plotly.js inside)")
    sub.add_argument("--json", default=None, metavar="PATH",
                     help="also write the numbers as JSON here; - writes them to standard output")
    sub.add_argument("--seed", type=int, default=0,
                     help="random seed for everything random (initialisation, resampling); same seed, same output")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_report(commands) -> None:
    """The `report` command: the full HTML report."""
    report = commands.add_parser("report", help="the full HTML report (the main job)", formatter_class=_Formatter, epilog=EPILOG,
                                 description="Logit lens, attribution, inversion and an ablation sweep in one file.")
    _common(report, out="report.html")
    report.add_argument("--layers", type=int, nargs="+", default=None,
                        help="blocks to invert (default: first, middle, last)")
    report.add_argument("--steps", type=int, default=100,
                        help="at most this many gradient-descent inversion steps (it stops early once closer "
                             "than the shifted input)")
    report.add_argument("--ablation", default="zero", choices=["zero", "mean", "resample"],
                        help="what replaces an activation in the ablation sweep: zeros, its mean over the prompt's "
                             "positions, or the same site on a shuffled prompt")


def _add_lens(commands) -> None:
    """The `lens` command: logit lens heatmaps."""
    lens = commands.add_parser("lens", help="logit lens heatmaps", formatter_class=_Formatter, epilog=EPILOG)
    _common(lens, out="lens.html")
    lens.add_argument("--compare", default="final", choices=["final", "input"],
                      help="compare each layer's prediction with the model's final output, or with the input tokens")
    lens.add_argument("--rows", default="blocks", choices=["blocks", "sublayers"],
                      help="one row per block, or separate rows after each attention and MLP step")
    lens.add_argument("--metric", nargs="+", default=["kl", "rank"],
                      choices=["kl", "rank", "prob", "entropy", "cross_entropy"],
                      help="heatmaps to draw, one per metric")
    lens.add_argument("--top-k", type=int, default=5, help="how many top tokens each cell keeps (hover text, JSON)")


def _add_invert(commands) -> None:
    """The `invert` command: recover the input from an activation."""
    inv = commands.add_parser("invert", help="recover the input from a layer's activation",
                              formatter_class=_Formatter, epilog=EPILOG)
    _common(inv, out="inversion.html")
    inv.add_argument("--target", default="resid_post.0",
                     help='hook plus optional slices, e.g. "blocks.1.hook_resid_post[:, 1:, :64]"')
    inv.add_argument("--method", default="exact", choices=["exact", "embedding", "direct"],
                     help="exact: verified token-by-token search; embedding / direct: gradient descent (no guarantee)")
    inv.add_argument("--steps", type=int, default=200, help="gradient steps (embedding/direct)")
    inv.add_argument("--loss", default="l2", choices=["l1", "l2", "cosine", "combined"],
                     help="gradient loss (embedding/direct)")


def _add_attribute(commands) -> None:
    """The `attribute` command."""
    attr = commands.add_parser("attribute", help="gradient x input / occlusion attribution",
                               formatter_class=_Formatter, epilog=EPILOG)
    _common(attr, out="attribution.html")
    attr.add_argument("--method", default="combined", choices=["grad_x_input", "occlusion", "combined"],
                      help="gradient x input, occlusion (replace one token at a time), or both averaged")
    attr.add_argument("--answer", "--target", dest="answer", default=None,
                      help="the next token (text or id) to attribute; default: the model's own prediction "
                           "(--target is the old spelling)")
    attr.add_argument("--metric", default="l1", choices=["l1", "kl", "logit_drop", "logprob_drop"],
                      help="occlusion's output change")
    attr.add_argument("--baseline", default="pad", help='occlusion baseline: pad, eos, bos, zero, mean or a token id')


def _add_ablate(commands) -> None:
    """The `ablate` command: an ablation sweep."""
    abl = commands.add_parser("ablate", help="ablation sweep over layers x positions", formatter_class=_Formatter, epilog=EPILOG)
    _common(abl, out="ablation.html")
    abl.add_argument("--ablation", default="zero", choices=["zero", "mean", "resample"],
                     help="what replaces the activation: zeros, its mean over the reference's positions, or the "
                          "same site on a shuffled reference")
    abl.add_argument("--target", "--site", dest="target", default="resid_post",
                     help="the activation swept: a site (resid_pre, resid_mid, resid_post, attn_out, mlp_out, embed) "
                          "with optional token and feature slices, e.g. 'resid_post[:, 1:, :64]' (--site is the old "
                          "spelling)")
    abl.add_argument("--metric", default="kl", choices=["kl", "logit_diff", "cross_entropy", "prob", "loss"],
                     help="how far each ablated run's output moves from the clean run")
    abl.add_argument("--reference", default=None, help="reference prompt for mean/resample (default: the prompt)")


def _add_doctor(commands) -> None:
    """The `doctor` command: versions and self-checks."""
    doctor = commands.add_parser(
        "doctor", help="versions, and every fast path's self-check (exit status 1 on a failure)",
        formatter_class=_Formatter, epilog=EPILOG,
        description="Print the versions of torch, transformers and TransformerLens, then run every self-check "
                    "(cache reuse, cut prefixes, layered runs, readout-only unembedding, batched rows, lens row) "
                    "on the embedded models and on --model.")
    doctor.add_argument("--model", default=None, help="also check this model (a local directory or a hub id)")
    doctor.add_argument("--device", default=None, help=DEVICE_HELP)


def build_parser() -> argparse.ArgumentParser:
    """The `lens-inversion` argument parser with every sub-command."""
    parser = _Parser(prog="lens-inversion", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_report, _add_lens, _add_invert, _add_attribute, _add_ablate):
        add(commands)
    add_corpus_commands(commands, formatter=_Formatter, epilog=EPILOG, model_help=MODEL_HELP, device_help=DEVICE_HELP)
    _add_doctor(commands)
    return parser


__all__ = ["build_parser"]
