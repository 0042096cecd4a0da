"""Fit the Jacobian lenses shipped with the embedded models (TransformerLens's estimator).

Prompts are the model's own training documents (rebuilt from its `training.json` by
`training_text.training_documents`, in training order, joined until each reaches the context),
so the lens sees the distribution the model was trained on; the held-out split stays unseen.

Run: python -m lens_inversion.models.fit_jacobian_lenses --cache DIR [--models tiny tiny-llama] [--prompts 400]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from ..errors import OptionError
from ..hooks.adapter import adapter_for
from ..lens.trained import fit_jacobian_lens, shipped_lens_path
from .loader import load_model
from .training_text import training_documents


def context_prompts(adapter, docs: list[str], *, n: int, n_tokens: int) -> list[str]:
    """`n` prompts of whole documents joined until each holds at least `n_tokens` tokens."""
    prompts, current = [], ""
    for doc in docs:
        current = f"{current} {doc}" if current else doc
        if len(adapter.model.tokenizer(current)["input_ids"]) >= n_tokens:
            prompts.append(current)
            current = ""
            if len(prompts) == n:
                return prompts
    raise OptionError(f"The corpus gave only {len(prompts)} prompts of {n_tokens} tokens; {n} were asked for.")


def fit_one(name: str, *, n_prompts: int, seq_len: int, cache: Path | None = None) -> dict:
    """Fit, strip the install-specific model path, save; return what was done."""
    model = load_model(name)
    adapter = adapter_for(model)
    torch.manual_seed(0)
    docs = training_documents(name, cache=cache)[: 4 * n_prompts * 4]
    prompts = context_prompts(adapter, docs, n=n_prompts, n_tokens=seq_len)
    start = time.perf_counter()
    lens = fit_jacobian_lens(model, prompts, max_seq_len=seq_len, dim_batch=32, corpus_name="the model's training text")
    seconds = time.perf_counter() - start
    # The absolute asset path differs per install; the unembedding fingerprint names the model instead.
    lens.metadata.pop("model_name", None)
    lens.metadata["lens_inversion_model"] = name
    path = shipped_lens_path(name, "jacobian")
    path.parent.mkdir(parents=True, exist_ok=True)
    lens.save(str(path))
    return {"model": name, "prompts": lens.n_prompts, "seq_len": seq_len, "seconds": round(seconds, 1),
            "bytes": path.stat().st_size, "path": str(path.relative_to(path.parents[4]))}


def main(argv: list[str] | None = None) -> None:
    """Fit and save the shipped Jacobian lens of each model, printing one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "tiny-llama"])
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--cache", type=Path, default=None, help="fetched sources (models trained on the mixture)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.models:
        print(json.dumps(fit_one(name, n_prompts=args.prompts, seq_len=args.seq_len, cache=args.cache)))


if __name__ == "__main__":
    main()
