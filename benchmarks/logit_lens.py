"""Logit lens, all metrics: lens_inversion vs stacking every row vs tuned-lens vs the floor.

On a random GPT-2-small-shaped model (12 layers, d_model 768, vocabulary 50,257), for each
prompt length, each method runs in its own subprocess so that its peak memory can be read
(VmHWM after resetting it via /proc/self/clear_refs; ru_maxrss where that is missing):

  - floor: one forward pass capturing the residual streams + the final norm and
    unembedding of every non-output row (results thrown away, no metrics);
  - li.logit_lens: every metric (KL, rank, prob, entropy, cross-entropy, top-5), exact,
    chunked;
  - stacked: the straightforward way (2020 notebook, tuned-lens): stack all rows'
    logits into [rows, pos, vocab], log_softmax, then the same metrics vectorised;
  - tuned-lens 0.2.0 `PredictionTrajectory.from_lens_and_model` with a `LogitLens` on an
    HF GPT2LMHeadModel of the same shape, then forward_kl, rank, entropy, cross_entropy,
    max_probability (if tuned-lens is installed; `pip install tuned-lens --no-deps`).

Peak memory is reported as the growth over the process's resident size just before the
method starts (model, tokens and a warm-up run already resident).

Run: python -m benchmarks.logit_lens [--lengths 256 1024] [--threads 2] [--tuned-max 256]
     [--layers 12 --d-model 768 --vocab 50257]  (smaller values for a quick run)
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _hwm_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _native(args):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=args.d_model,
        d_head=64,
        n_heads=args.d_model // 64,
        n_layers=args.layers,
        n_ctx=max(args.lengths),
        d_vocab=args.vocab,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=0,
        device="cpu",
    )
    return TransformerBridge.boot_native(cfg).eval()


def _floor(model, tokens):
    from lens_inversion.hooks import Site, adapter_for

    adapter = adapter_for(model)
    keys = [(Site.RESID_PRE, 0)] + [(Site.RESID_POST, layer) for layer in range(adapter.n_layers - 1)]
    with torch.no_grad():
        run = adapter.run(tokens, capture=keys, need_logits=True)
        for key in keys:
            adapter.lens_logits(run[key])


def _stacked(model, tokens):
    from lens_inversion.hooks import Site, adapter_for

    adapter = adapter_for(model)
    keys = [(Site.RESID_PRE, 0)] + [(Site.RESID_POST, layer) for layer in range(adapter.n_layers - 1)]
    with torch.no_grad():
        run = adapter.run(tokens, capture=keys, need_logits=True)
        stack = torch.stack([adapter.lens_logits(run[k])[0] for k in keys] + [run.logits[0]]).float()
        lp = stack.log_softmax(-1)  # [rows, pos, vocab]
        final = lp[-1]
        target = final.argmax(-1)
        kl = (final.exp() * (final - lp)).sum(-1)
        tgt_lp = lp.gather(-1, target.expand(lp.shape[0], -1)[..., None])
        rank = (lp > tgt_lp).sum(-1) + 1
        prob = tgt_lp[..., 0].exp()
        entropy = -(lp.exp() * lp).sum(-1)
        ce = -lp[:, :-1].gather(-1, tokens[0, 1:].expand(lp.shape[0], -1)[..., None])
        top = lp.topk(5, dim=-1)
    return kl, rank, prob, entropy, ce, top


def _ours(model, tokens):
    from lens_inversion.lens import logit_lens

    return logit_lens(model, tokens[0], progress=False)


def _tuned(args, tokens):
    import tuned_lens.model_surgery as surgery

    surgery._transformer_lens_available = False  # TL 4 has no HookedTransformer (tl4_notes §9)
    from transformers import GPT2Config, GPT2LMHeadModel
    from tuned_lens.nn.lenses import LogitLens
    from tuned_lens.plotting import PredictionTrajectory

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(
            n_layer=args.layers,
            n_embd=args.d_model,
            n_head=args.d_model // 64,
            vocab_size=args.vocab,
            n_positions=max(args.lengths),
        )
    ).eval()
    lens = LogitLens.from_model(hf)
    ids = tokens[0].tolist()

    def run():
        traj = PredictionTrajectory.from_lens_and_model(lens, hf, ids, targets=ids[1:] + [ids[0]])
        return [traj.forward_kl(), traj.rank(), traj.entropy(), traj.cross_entropy(), traj.max_probability()]

    warm = tokens[0, :16].tolist()
    PredictionTrajectory.from_lens_and_model(lens, hf, warm, targets=warm).forward_kl()
    return run


def child(args) -> None:
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, args.vocab, (1, args.length), generator=gen)
    if args.method == "tuned":
        fn = _tuned(args, tokens)
    else:
        model = _native(args)
        method = {"floor": _floor, "stacked": _stacked, "ours": _ours}[args.method]
        method(model, tokens[:, :16])  # warm-up

        def fn():
            return method(model, tokens)

    reset = _hwm_reset()
    before_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(seconds=seconds, extra_mb=(peak_kb - before_kb) / 1024, hwm_reset=reset)))


def measure(args, method: str, length: int) -> dict | None:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.logit_lens",
        "--child",
        method,
        "--length",
        str(length),
        "--threads",
        str(args.threads),
        "--layers",
        str(args.layers),
        "--d-model",
        str(args.d_model),
        "--vocab",
        str(args.vocab),
        "--lengths",
        *map(str, args.lengths),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        print(f"  {method} at {length} tokens failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--tuned-max", type=int, default=256, help="longest prompt to give tuned-lens")
    parser.add_argument("--child", dest="method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method is not None:
        child(args)
        return
    try:
        import tuned_lens  # noqa: F401

        has_tuned = True
    except ImportError:
        has_tuned = False
        print("tuned-lens is not installed; its column is left out", file=sys.stderr)
    print(f"model: {args.layers} layers, d_model {args.d_model}, vocab {args.vocab}; {args.threads} threads")
    print("| tokens | method | seconds | × floor | peak extra MB | ours faster by | ours less memory by |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        methods = ["floor", "ours", "stacked"] + (["tuned"] if has_tuned and length <= args.tuned_max else [])
        res = {m: measure(args, m, length) for m in methods}
        floor, ours = res["floor"], res["ours"]
        for m, r in res.items():
            if r is None:
                print(f"| {length} | {m} | failed | | | | |")
                continue
            x_floor = f"{r['seconds'] / floor['seconds']:.2f}" if floor else ""
            faster = f"{r['seconds'] / ours['seconds']:.1f}×" if ours and m not in ("ours", "floor") else ""
            less = f"{r['extra_mb'] / max(ours['extra_mb'], 1):.1f}×" if ours and m not in ("ours", "floor") else ""
            print(f"| {length} | {m} | {r['seconds']:.2f} | {x_floor} | {r['extra_mb']:.0f} | {faster} | {less} |")


if __name__ == "__main__":
    main()
