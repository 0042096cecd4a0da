"""Train the tuned lenses shipped with the embedded models, offline and deterministically.

    python -m lens_inversion.models.train_lenses --cache DIR              # tiny and tiny-llama
    python -m lens_inversion.models.train_lenses --cache DIR --model tiny # one of them

Each lens is trained on the model's own training text (rebuilt from its `training.json` by
`training_text.training_documents`; a model trained on the mixture needs the fetched sources in
`--cache`), so the held-out documents are never seen; it is measured on the model's
`heldout.txt` and `heldout_sources.json`, and written in the tuned-lens format to
`assets/<model>/lenses/tuned/` (float32, about 66k parameters). The step count, not the
clock, fixes the result.
"""

import argparse
import time
from pathlib import Path

import torch

from .loader import ASSETS
from .training_text import heldout_documents, is_mixed, training_documents, training_record

MODELS = ("tiny", "tiny-llama")
STEPS = 80
TOKENS_PER_STEP = 4096


def train_lens(name: str, *, steps: int = STEPS, tokens_per_step: int = TOKENS_PER_STEP, out: Path | None = None,
               cache: Path | None = None, progress: bool = True) -> dict:
    """Train, measure and save the tuned lens of the embedded model `name`; return its metadata.

    `cache` holds the fetched real-English sources, needed for a model trained on the mixture.
    """
    from ..lens.tuned import TunedLens
    from .loader import load_model

    model = load_model(name, device="cpu")
    training = training_record(name)["config"]
    corpus = training_documents(name, cache=cache)
    lens = TunedLens.train(model, corpus, steps=steps, tokens_per_step=tokens_per_step, seq_len=training["n_ctx"],
                           held_out=heldout_documents(name), progress=progress)
    lens.metadata["model"] = name
    kind = "the mixture of grammar and real English" if is_mixed(name) else "the generated grammar"
    lens.metadata["corpus"] = (f"the model's own training text ({kind}, seed {training['seed']}, "
                               "lens_inversion.models.training_text); held-out: its heldout.txt and heldout_sources.json")
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
    parser.add_argument("--cache", type=Path, default=None, help="fetched sources (models trained on the mixture)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.model or MODELS:
        start = time.perf_counter()
        out = None if args.out is None else args.out / name / "lenses" / "tuned"
        meta = train_lens(name, steps=args.steps, tokens_per_step=args.tokens_per_step, out=out, cache=args.cache)
        kl = meta["held_out"]
        print(f"{name}: {meta['tokens_seen']:,} tokens in {time.perf_counter() - start:.0f} s; held-out KL (nats)")
        for row, tuned, logit in zip(kl["rows"], kl["kl"], kl["logit_kl"], strict=True):
            print(f"  {row:>6}  tuned {tuned:7.4f}  logit {logit:7.4f}")


if __name__ == "__main__":
    main()
