"""Train the tuned lenses shipped with the embedded models, offline and deterministically.

    python -m lens_inversion.models.train_lenses                 # tiny and tiny-llama
    python -m lens_inversion.models.train_lenses --model tiny    # one of them

Each lens is trained on the model's own training text (`corpus.documents` with the seed in
the model's `training.json`, so the held-out documents are never seen), measured on the
model's `heldout.txt`, and written in the tuned-lens format to
`assets/<model>/lenses/tuned/` (float32, about 66k parameters). The step count, not the
clock, fixes the result.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from .corpus import documents
from .loader import ASSETS

MODELS = ("tiny", "tiny-llama")
STEPS = 80
TOKENS_PER_STEP = 4096


def train_lens(name: str, *, steps: int = STEPS, tokens_per_step: int = TOKENS_PER_STEP, out: Path | None = None,
               progress: bool = True) -> dict:
    """Train, measure and save the tuned lens of the embedded model `name`; return its metadata."""
    from ..lens.tuned import TunedLens
    from .loader import load_model

    model = load_model(name, device="cpu")
    training = json.loads((ASSETS / name / "training.json").read_text())["config"]
    held_out = (ASSETS / name / "heldout.txt").read_text().splitlines()
    corpus = documents(training["n_train_docs"], seed=training["seed"])  # streamed: one pass is plenty
    lens = TunedLens.train(model, corpus, steps=steps, tokens_per_step=tokens_per_step, seq_len=training["n_ctx"],
                           held_out=held_out, progress=progress)
    lens.metadata["model"] = name
    lens.metadata["corpus"] = (f"lens_inversion.models.corpus.documents(seed={training['seed']}): the model's own "
                               "training text; held-out: its heldout.txt")
    lens.metadata["torch"] = torch.__version__
    lens.metadata["threads"] = torch.get_num_threads()
    lens.save(out or ASSETS / name / "lenses" / "tuned")
    return lens.metadata


def main(argv: list[str] | None = None) -> None:
    """Train and save the tuned lens of each embedded model, printing its held-out KL (nats) per row."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, action="append", help="default: all embedded models")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--tokens-per-step", type=int, default=TOKENS_PER_STEP)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="root folder (default: the package's assets)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.model or MODELS:
        start = time.perf_counter()
        out = None if args.out is None else args.out / name / "lenses" / "tuned"
        meta = train_lens(name, steps=args.steps, tokens_per_step=args.tokens_per_step, out=out)
        kl = meta["held_out"]
        print(f"{name}: {meta['tokens_seen']:,} tokens in {time.perf_counter() - start:.0f} s; held-out KL (nats)")
        for row, tuned, logit in zip(kl["rows"], kl["kl"], kl["logit_kl"], strict=True):
            print(f"  {row:>6}  tuned {tuned:7.4f}  logit {logit:7.4f}")


if __name__ == "__main__":
    main()
