"""Gradient inversion: optimisation steps per second against a bare loop, and batched
against sequential restarts.

Three ways to take N steps of SGD on the input embedding of one prompt, target
`blocks.L.hook_resid_post`, measured in one run:
  - bare fwd+bwd: `run_with_hooks` with the embedding replaced, stopped after block L,
    L1 loss, backward; no optimiser (the floor);
  - bare + SGD: the same plus an SGD step and a linear LR schedule (what a user writes);
  - li.invert(method="embedding"): everything included (observation, shifted yardstick,
    decoding, pseudoinverse, progress bar off).
Then R restarts: one call with n_restarts=R (batch dimension) against R calls.

Run: python -m benchmarks.gradient_inversion [--model tiny] [--steps 200] [--threads 1] [--repeats 3]
"""

import argparse
import time

import torch

import lens_inversion as li
from lens_inversion.inversion import invert

PROMPT = "The sky is blue and the grass is green."


def bare(model, tokens, layer, steps, *, sgd):
    hook = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook])
    goal = cache[hook]
    e = (torch.randn(*tokens.shape, model.cfg.d_model) * 0.05 + 0.5).requires_grad_(True)
    opt = torch.optim.SGD([e], lr=20.0)
    sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total_iters=steps)
    got = {}
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        model.run_with_hooks(
            tokens, stop_at_layer=layer + 1,
            fwd_hooks=[("hook_embed", lambda x, hook: e), (hook, lambda x, hook: got.update(x=x))],
        )
        (got["x"] - goal).abs().mean().backward()
        if sgd:
            opt.step()
            sched.step()
    return time.perf_counter() - start


def timed(fn, repeats=1):
    """Best wall time of `repeats` runs (the shared CPU is noisy) and the last output."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = li.load_model(args.model, device="cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    tokens = li.ModelAdapter(model).prompt(PROMPT).tokens
    n = args.steps
    print(f"model={args.model} n_layers={model.cfg.n_layers} d_model={model.cfg.d_model} "
          f"pos={tokens.shape[1]} steps={n} threads={args.threads}\n")
    print("| target layer | bare fwd+bwd steps/s | bare + SGD steps/s | li.invert steps/s | overhead vs fwd+bwd |")
    print("|---|---|---|---|---|")
    k = args.repeats
    for layer in (0, model.cfg.n_layers - 1):
        target = f"blocks.{layer}.hook_resid_post"
        bare(model, tokens, layer, 5, sgd=True)  # warm-up
        t_bare = min(bare(model, tokens, layer, n, sgd=False) for _ in range(k))
        t_sgd = min(bare(model, tokens, layer, n, sgd=True) for _ in range(k))
        t_inv, _ = timed(lambda t=target: invert(model, PROMPT, target=t, steps=n, progress=False), k)
        print(f"| {layer} | {n / t_bare:.1f} | {n / t_sgd:.1f} | {n / t_inv:.1f} | {t_inv / t_bare - 1:+.0%} |")
    layer = model.cfg.n_layers - 1
    target = f"blocks.{layer}.hook_resid_post"
    r = args.restarts
    t_batched, res = timed(lambda: invert(model, PROMPT, target=target, steps=n, n_restarts=r, progress=False))
    t_seq, seq = timed(
        lambda: [invert(model, PROMPT, target=target, steps=n, seed=s, progress=False) for s in range(r)]
    )
    best_seq = min(x.distance for x in seq)
    print(f"\n| {r} restarts, layer {layer} | seconds | best distance |")
    print("|---|---|---|")
    print(f"| batched (n_restarts={r}) | {t_batched:.2f} | {res.distance:.4g} |")
    print(f"| sequential ({r} calls) | {t_seq:.2f} | {best_seq:.4g} |")
    print(f"| speed-up | {t_seq / t_batched:.2f}x | |")


if __name__ == "__main__":
    main()
