"""li.evaluate_lens against a plain PyTorch loop doing the same statistics by stacking.

Both read the same corpus (the embedded model's held-out text) in the same batches of
`--seq-len`-token rows and compute, for the logit lens, every row's KL(final ‖ row),
entropy, top-1 agreement and next-token cross-entropy, summed over the corpus:

  - ours:    `li.evaluate_lens(model, corpus, seq_len=..., batch_size=...)`;
  - stacked: per batch, every row's logits stacked into [rows, tokens, vocab], one
             log_softmax, then the four statistics vectorised (the straightforward way).

Models: the embedded `tiny` (4 layers, vocabulary 4,096) and a random GPT-2-small-shaped
bridge (12 layers, d_model 768, vocabulary 50,257; `benchmarks.logit_lens._native`) given
tiny's tokenizer (its ids are a subset of the vocabulary), on `--gpt2-tokens` tokens.
Each run is its own subprocess, so that its peak memory is the growth of the resident set
(VmHWM after /proc/self/clear_refs) over its size just before the run; runs go in
`--repeats` rounds in rotated order and the table gives the median tokens/s. The parent
asserts that both methods' statistics agree to 1e-4.

`--scaling` also times ours on tiny with 1 and 2 processes under torchrun (gloo).

Goal (issue 15): ours ≥ 1.3× the stacked loop's tokens/s and ≥ 10× less peak memory.

Run: python -m benchmarks.evaluate_lens [--repeats 3] [--threads 2] [--scaling] [--quick]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.logit_lens import ROOT, _hwm_reset, _native, _status_kb

HELD_OUT = ROOT / "lens_inversion" / "models" / "assets" / "tiny" / "heldout.txt"
METHODS = ("ours", "stacked")


def _model(args):
    import lens_inversion as li

    tiny = li.load_model("tiny")
    if args.shape == "tiny":
        return tiny
    model = _native(argparse.Namespace(d_model=768, layers=12, vocab=50257, lengths=[args.seq_len]))
    model.tokenizer = tiny.tokenizer
    return model


def _stacked(model, corpus, seq_len: int, batch_size: int, max_tokens: int | None) -> dict:
    """The plain loop: the documented packing, then stacked [rows, tokens, vocab] log-probabilities."""
    from lens_inversion.corpus.batches import corpus_batches
    from lens_inversion.hooks import Site, adapter_for

    adapter = adapter_for(model)
    keys = [(Site.RESID_PRE, 0)] + [(Site.RESID_POST, layer) for layer in range(adapter.n_layers - 1)]
    sums = {k: torch.zeros(len(keys) + 1, dtype=torch.float64) for k in ("kl", "entropy", "top1", "cross_entropy")}
    for batch in corpus_batches(adapter, corpus, seq_len=seq_len, batch_size=batch_size, max_tokens=max_tokens):
        with torch.no_grad():
            run = adapter.run(batch.tokens, capture=keys, need_logits=True)
            stack = torch.stack([adapter.lens_logits(run[k]) for k in keys] + [run.logits]).float()
            lp = stack.flatten(1, 2).log_softmax(-1)  # [rows, tokens, vocab]
            final = lp[-1]
            sums["kl"] += (final.exp() * (final - lp)).sum((1, 2)).double()
            sums["entropy"] += -(lp.exp() * lp).sum((1, 2)).double()
            sums["top1"] += (lp.argmax(-1) == final.argmax(-1)).sum(1).double()
            nxt = batch.next_tokens.flatten()
            scored = batch.predicted.flatten()
            ce = -lp.gather(-1, nxt.expand(lp.shape[0], -1)[..., None])[..., 0]
            sums["cross_entropy"] += ce[:, scored].sum(1).double()
    return {k: v.tolist() for k, v in sums.items()}


def _ours(model, corpus, seq_len: int, batch_size: int, max_tokens: int | None) -> dict:
    import lens_inversion as li

    got = li.evaluate_lens(model, corpus, seq_len=seq_len, batch_size=batch_size, max_tokens=max_tokens,
                           progress=False)
    return {"kl": (got.kl[0] * got.tokens).tolist(), "entropy": (got.entropy[0] * got.tokens).tolist(),
            "top1": (got.top1_agreement[0] * got.tokens).tolist(),
            "cross_entropy": (got.cross_entropy[0] * got.predicted).tolist(), "tokens": got.tokens}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    model = _model(args)
    fn = {"ours": _ours, "stacked": _stacked}[args.method]
    fn(model, [HELD_OUT.read_text()[:2000]], args.seq_len, args.batch_size, 64)  # warm-up
    reset = _hwm_reset()
    before_kb = _status_kb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    sums = fn(model, HELD_OUT, args.seq_len, args.batch_size, args.max_tokens)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_kb = _status_kb("VmHWM") if reset else before_kb
    Path(args.out).write_text(json.dumps({"seconds": seconds, "cpu": cpu, "extra_mb": (peak_kb - before_kb) / 1024,
                                          "sums": sums}))


def measure(args, method: str, shape: str, out: Path) -> dict:
    max_tokens = args.gpt2_tokens if shape == "gpt2" else args.tiny_tokens
    cmd = [sys.executable, "-m", "benchmarks.evaluate_lens", "--child", method, "--shape", shape, "--out", str(out),
           "--threads", str(args.threads), "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
           *(["--max-tokens", str(max_tokens)] if max_tokens else [])]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{method} on {shape} failed:\n{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def _check_agreement(ours: dict, stacked: dict) -> float:
    worst = 0.0
    tokens = ours["sums"]["tokens"]
    for key in ("kl", "entropy", "top1", "cross_entropy"):
        a, b = torch.tensor(ours["sums"][key]), torch.tensor(stacked["sums"][key])
        worst = max(worst, float((a - b).abs().max()) / tokens)
    assert worst < 1e-4, f"ours and the stacked loop disagree by {worst:.2e} per token"
    return worst


def _scaling(args) -> None:
    script = (f"import torch, time, lens_inversion as li\ntorch.set_num_threads(1)\nm = li.load_model('tiny')\n"
              f"t = time.perf_counter()\nr = li.evaluate_lens(m, {str(HELD_OUT)!r}, seq_len={args.seq_len}, "
              f"batch_size={args.batch_size}, progress=False)\nprint('TOKS', r.tokens / (time.perf_counter() - t))\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scale.py"
        path.write_text(script)
        for n in (1, 2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", str(path)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            rates = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("TOKS")]
            print(f"| tiny | {n} process{'es' if n > 1 else ''} (1 thread each) | {min(rates) if rates else 'failed'} tok/s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tiny-tokens", type=int, default=None, help="tokens of the held-out text on tiny (all)")
    parser.add_argument("--gpt2-tokens", type=int, default=2048, help="tokens on the GPT-2-small shape")
    parser.add_argument("--scaling", action="store_true", help="also time 1 vs 2 processes under torchrun")
    parser.add_argument("--quick", action="store_true", help="tiny only, 1 round")
    parser.add_argument("--child", dest="method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--max-tokens", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method is not None:
        child(args)
        return
    shapes = ["tiny"] if args.quick else ["tiny", "gpt2"]
    repeats = 1 if args.quick else args.repeats
    print(f"{args.threads} threads, rows of {args.seq_len} tokens, {args.batch_size} rows per batch, "
          f"median of {repeats} rounds")
    print("| model | method | tokens/s | CPU s | peak extra MB | ours faster by | ours less memory by |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            runs = {m: [] for m in METHODS}
            for r in range(repeats):
                for method in METHODS[r % 2:] + METHODS[: r % 2]:
                    runs[method].append(measure(args, method, shape, Path(tmp) / f"{shape}-{method}-{r}.json"))
            worst = _check_agreement(runs["ours"][0], runs["stacked"][0])
            tokens = runs["ours"][0]["sums"]["tokens"]
            rate = {m: statistics.median(tokens / x["seconds"] for x in runs[m]) for m in METHODS}
            peak = {m: max(x["extra_mb"] for x in runs[m]) for m in METHODS}
            cpu = {m: statistics.median(x["cpu"] for x in runs[m]) for m in METHODS}
            for m in METHODS:
                faster = f"{rate['ours'] / rate[m]:.2f}×" if m != "ours" else ""
                less = f"{peak[m] / max(peak['ours'], 1):.1f}×" if m != "ours" else ""
                print(f"| {shape} ({tokens:,} tokens) | {m} | {rate[m]:,.0f} | {cpu[m]:.1f} | {peak[m]:.0f} | "
                      f"{faster} | {less} |")
            print(f"agreement on {shape}: max |Δ| {worst:.1e} per token")
    if args.scaling:
        _scaling(args)


if __name__ == "__main__":
    main()
