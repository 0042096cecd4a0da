"""Argument parsing for `lens-inversion`: one subcommand per capability."""

import argparse

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
  lens-inversion doctor    (versions and self-checks: run it when numbers look wrong)
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show every option's default."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line format (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"lens-inversion: error: {message} (see {self.prog} --help)\n")


def _common(sub: argparse.ArgumentParser, *, out: str) -> None:
    sub.add_argument("prompt", help="the prompt text")
    sub.add_argument("--model", default="tiny",
                     help='"tiny", "tiny-untrained", "tiny-llama", a local Hugging Face model directory, or a hub name')
    sub.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    sub.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    sub.add_argument("--out", default=out, help="HTML file to write")
    sub.add_argument("--json", default=None, metavar="PATH", help="also write the numbers as JSON here")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lens-inversion", description=DESCRIPTION, formatter_class=_Formatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    report = commands.add_parser("report", help="the full HTML report (the main job)", formatter_class=_Formatter,
                                 description="Logit lens, attribution, inversion and an ablation sweep in one file.")
    _common(report, out="report.html")
    report.add_argument("--layers", type=int, nargs="+", default=None,
                        help="blocks to invert (default: first, middle, last)")
    report.add_argument("--steps", type=int, default=200, help="gradient-descent inversion steps")
    report.add_argument("--ablation", default="zero", choices=["zero", "mean", "resample"])

    lens = commands.add_parser("lens", help="logit lens heatmaps", formatter_class=_Formatter)
    _common(lens, out="lens.html")
    lens.add_argument("--compare", default="final", choices=["final", "input"])
    lens.add_argument("--rows", default="blocks", choices=["blocks", "sublayers"])
    lens.add_argument("--metric", nargs="+", default=["kl", "rank"],
                      choices=["kl", "rank", "prob", "entropy", "cross_entropy"])
    lens.add_argument("--top-k", type=int, default=5)

    inv = commands.add_parser("invert", help="recover the input from a layer's activation",
                              formatter_class=_Formatter)
    _common(inv, out="inversion.html")
    inv.add_argument("--target", default="resid_post.0",
                     help='hook plus optional slices, e.g. "blocks.1.hook_resid_post[:, 1:, :64]"')
    inv.add_argument("--method", default="exact", choices=["exact", "embedding", "direct"])
    inv.add_argument("--steps", type=int, default=200, help="gradient steps (embedding/direct)")
    inv.add_argument("--loss", default="l2", choices=["l1", "l2", "cosine", "combined"],
                     help="gradient loss (embedding/direct)")

    attr = commands.add_parser("attribute", help="gradient x input / occlusion attribution",
                               formatter_class=_Formatter)
    _common(attr, out="attribution.html")
    attr.add_argument("--method", default="combined", choices=["grad_x_input", "occlusion", "combined"])
    attr.add_argument("--target", default=None,
                      help="a next token (text or id) to attribute; default: the model's own prediction")
    attr.add_argument("--metric", default="l1", choices=["l1", "kl", "logit_drop", "logprob_drop"],
                      help="occlusion's output change")
    attr.add_argument("--baseline", default="pad", help='occlusion baseline: pad, eos, bos, zero, mean or a token id')

    abl = commands.add_parser("ablate", help="ablation sweep over layers x positions", formatter_class=_Formatter)
    _common(abl, out="ablation.html")
    abl.add_argument("--ablation", default="zero", choices=["zero", "mean", "resample"])
    abl.add_argument("--site", default="resid_post", help="resid_pre, resid_mid, resid_post, attn_out, mlp_out")
    abl.add_argument("--metric", default="kl", choices=["kl", "logit_diff", "loss", "prob"])
    abl.add_argument("--reference", default=None, help="reference prompt for mean/resample (default: the prompt)")
    doctor = commands.add_parser(
        "doctor", help="versions, and every fast path's self-check (exit status 1 on a failure)",
        formatter_class=_Formatter,
        description="Print the versions of torch, transformers and TransformerLens, then run every self-check "
                    "(cache reuse, cut prefixes, layered runs, readout-only unembedding, batched rows, lens row) "
                    "on the embedded models and on --model.")
    doctor.add_argument("--model", default=None, help="also check this model (a local directory or a hub name)")
    doctor.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    return parser


__all__ = ["build_parser"]
