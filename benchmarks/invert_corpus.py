"""Corpus-scale exact inversion: how often li.invert recovers held-out text, and how fast.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/invert_corpus.py [--prompts 100] [--tokens 20] [--threads 1]

`invert_corpus` on the embedded `tiny` model's held-out text (`heldout.txt`, one document
per line), windows of `--tokens` tokens (consecutive, non-overlapping, within a line), the
first `--prompts` of them, target the last block's resid_post at every position, method
"exact". Prints the result's table, then one JSON line: exact-recovery rate, token
accuracy, verified rate, mean seconds per prompt (each inversion's own timer) and the wall
time of the whole job. `--loop N` also times a plain `li.invert` loop over the first N
windows (the runner's overhead is the difference per prompt).
"""

import argparse
import json
import time

import torch

import lens_inversion as li
from lens_inversion.corpus.invert_job import invert_corpus, windows
from lens_inversion.hooks.adapter import adapter_for
from lens_inversion.models.loader import ASSETS

HELDOUT = ASSETS / "tiny" / "heldout.txt"


def plain_loop(model, texts, n: int, n_tokens: int) -> float:
    """Seconds per prompt of `li.invert` called on the first `n` windows, one by one."""
    prompts = list(windows(adapter_for(model), texts, n_tokens=n_tokens, n_prompts=n))
    start = time.perf_counter()
    for w in prompts:
        li.invert(model, w.tokens[None], target=li.Target(layer=-1), method="exact", progress=False, seed=0)
    return (time.perf_counter() - start) / len(prompts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--loop", type=int, default=0, help="also time a plain li.invert loop on this many windows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = li.load_model("tiny", device="cpu")
    texts = HELDOUT.read_text().splitlines()
    start = time.perf_counter()
    res = invert_corpus(model, texts, n_prompts=args.prompts, n_tokens=args.tokens, method="exact", progress=False)
    wall = time.perf_counter() - start
    print(res)
    out = dict(benchmark="invert_corpus", model="tiny", method="exact", target=list(res.targets),
               prompts=res.prompts, n_tokens=res.n_tokens, threads=args.threads,
               exact_recovery_rate=res.exact_recovery_rate, token_accuracy=res.token_accuracy,
               verified_rate=res.verified_rate, mean_seconds=res.mean_seconds, wall_seconds=wall,
               candidates_per_position=res.candidates_checked / (res.prompts * res.n_tokens),
               margin_counts=res.margin_counts.tolist())
    if args.loop:
        out["plain_loop_seconds_per_prompt"] = plain_loop(model, texts, args.loop, args.tokens)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
