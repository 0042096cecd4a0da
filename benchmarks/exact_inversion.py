"""Exact inversion against a naive verifier and against the gradient methods, in one run.

Per model, one prompt, target `blocks.{last}.hook_resid_post`:
  - exact: `invert_exact` (gradient candidate order, batched verification, prefix key/value
    cache, stop at the target's layer);
  - naive verifier: random candidate order, one candidate per forward pass, the whole
    sequence recomputed each time (no prefix reuse), stop at the target's layer. It is run
    for real on `--naive-positions` positions, capped at `--naive-cap` forwards each; its
    time per position is (forwards needed: the true token's rank in the seeded random order)
    / (measured forwards per second), so the ratio is measured, not assumed;
  - gradient: `invert(method="embedding")` and `invert(method="direct")` at their research
    defaults (200 SGD steps, L1 loss, noise start), accuracy and time.

Run: python -m benchmarks.exact_inversion [--models tiny,tiny-untrained,gpt2-small] [--threads 1]
     python -m benchmarks.exact_inversion --bandwidth   (features of resid_post needed, for the docs)
     python -m benchmarks.exact_inversion --ranks       (the true token's rank in the gradient order)
"""

import argparse
import statistics
import tempfile
import time

import torch

import lens_inversion as li
from lens_inversion.hooks import Site, adapter_for
from lens_inversion.inversion import invert
from lens_inversion.inversion.exact import invert_exact

TEXT = "Alice gave bread to Bob, and Bob thanked Alice. The sky is blue."


def gpt2_small_random(n_pos):
    """A GPT-2-small-shaped HF model (12 layers, d_model 768, vocab 50,257), random weights."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tempfile.mkdtemp(prefix="li-gpt2-small-")
    GPT2LMHeadModel(GPT2Config()).save_pretrained(path)
    tiny = li.load_model("tiny")
    tiny.tokenizer.save_pretrained(path)
    model = TransformerBridge.boot_transformers(path, device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    return model, torch.randint(2, 50257, (1, n_pos), generator=g)


def naive_position(adapter, tokens, t, key, goal, cap, seed):
    """Random order, one candidate per forward, full recompute. Returns (forwards needed, forwards/s)."""
    g = torch.Generator().manual_seed(seed + t)
    order = torch.randperm(adapter.d_vocab, generator=g)
    needed = int((order == tokens[0, t]).nonzero()) + 1
    runs = min(needed, cap)
    seq = tokens[:, : t + 1].clone()
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(runs):
            seq[0, t] = order[i]
            row = adapter.run(seq, capture=[key])[key][0, t]
            if float((row - goal).norm()) <= 1e-4 * float(goal.norm()):
                break
    return needed, runs / (time.perf_counter() - start)


def bench(name, model, prompt, args):
    adapter = adapter_for(model)
    last = adapter.n_layers - 1
    target = f"blocks.{last}.hook_resid_post"
    tokens = adapter.prompt(prompt).tokens
    n_pos = tokens.shape[1]
    rows = []
    start = time.perf_counter()
    res = invert_exact(model, prompt, target=target, progress=False, seed=0)
    exact_s = time.perf_counter() - start
    checked = sum(p.candidates_checked for p in res.trace.positions) / (n_pos * adapter.d_vocab)
    margin = min(p.margin for p in res.trace.positions)
    rows.append(("exact (ours)", exact_s, exact_s / n_pos, checked, res.token_accuracy, margin))

    key = (Site.RESID_POST, last)
    with torch.no_grad():
        full = adapter.run(tokens, capture=[key])[key]
    per_pos, fractions = [], []
    for t in range(1, 1 + args.naive_positions):
        needed, rate = naive_position(adapter, tokens, t, key, full[0, t], args.naive_cap, seed=0)
        per_pos.append(needed / rate)
        fractions.append(needed / adapter.d_vocab)
    naive_pos = sum(per_pos) / len(per_pos)
    rows.append(("naive verifier", naive_pos * n_pos, naive_pos, sum(fractions) / len(fractions), 1.0, float("nan")))

    if not args.skip_gradient and name in args.gradient_models.split(","):
        for method in ("embedding", "direct"):
            start = time.perf_counter()
            g = invert(model, prompt, target=target, method=method, progress=False, seed=0)
            s = time.perf_counter() - start
            rows.append((f"gradient {method} (200 steps)", s, s / n_pos, float("nan"), g.token_accuracy, float("nan")))
    print(f"\n## {name}: {adapter.n_layers} layers, d_model {adapter.d_model}, vocab {adapter.d_vocab}, "
          f"{n_pos} tokens, target {target}")
    print("| method | s / prompt | s / position | vocab fraction checked | token accuracy | min margin |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, s, sp, frac, acc, margin in rows:
        print(f"| {label} | {s:.2f} | {sp:.3f} | {frac:.4f} | {acc:.2f} | {margin:.3g} |")
    print(f"exact is {naive_pos / (exact_s / n_pos):.0f}x faster per position than the naive verifier")


def bandwidth(widths=(128, 64, 32, 16, 8, 4, 2, 1), layers=(0, 3)) -> None:
    """How few leading features of resid_post still identify every input token (embedded model)."""
    model = li.load_model("tiny")
    print("\n## bandwidth: tiny, resid_post[:, :, :k], prompt of", adapter_for(model).prompt(TEXT).pos, "tokens")
    print("| layer | k features | token accuracy | unique positions | min margin | median margin | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for layer in layers:
        for k in widths:
            target = f"blocks.{layer}.hook_resid_post[:, :, :{k}]"
            start = time.perf_counter()
            res = invert_exact(model, TEXT, target=target, progress=False, seed=0)
            margins = sorted(p.margin for p in res.trace.positions)
            unique = sum(p.unique for p in res.trace.positions)
            print(f"| {layer} | {k} | {res.token_accuracy:.2f} | {unique}/{len(margins)} | {margins[0]:.3g} | "
                  f"{margins[len(margins) // 2]:.3g} | {time.perf_counter() - start:.1f} |")


def candidate_ranks(layers=(0, 1, 2, 3), n_prompts=10, n_tokens=20) -> None:
    """Where the gradient order puts the true token, per block, on held-out prompts (embedded model).

    A probe around the search's private ranking step records each position's order; the
    true token's place in it is the number of verifications a one-at-a-time search would need.
    """
    from lens_inversion.inversion import exact
    from lens_inversion.models.evaluate import heldout_texts

    model = li.load_model("tiny")
    adapter = adapter_for(model)
    windows = [adapter.tokenizer.encode(t, add_special_tokens=False)[:n_tokens] for t in heldout_texts(200)]
    prompts = [adapter.tokenizer.decode(w) for w in windows if len(w) == n_tokens][:n_prompts]
    orders: list[tuple[int, list[int]]] = []
    rank_step = exact._rank

    def probe(frame):
        ranked = rank_step(frame)
        orders.append((frame.t, ranked[0, -1].tolist()))
        return ranked

    print(f"\n## candidate ranks: tiny, {len(prompts)} held-out prompts of {n_tokens} tokens, vocabulary {adapter.d_vocab}")
    print("| block | mean rank | median rank | positions |")
    print("| --- | --- | --- | --- |")
    exact._rank = probe
    try:
        for layer in layers:
            ranks = []
            for prompt in prompts:
                orders.clear()
                tokens = adapter.prompt(prompt).tokens[0].tolist()
                invert_exact(model, prompt, target=f"blocks.{layer}.hook_resid_post", progress=False, seed=0)
                ranks += [order.index(tokens[t]) + 1 for t, order in orders if t < len(tokens)]
            print(f"| {layer} | {statistics.mean(ranks):.1f} | {statistics.median(ranks):g} | {len(ranks)} |")
    finally:
        exact._rank = rank_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="tiny,tiny-untrained,gpt2-small")
    parser.add_argument("--gradient-models", default="tiny,tiny-untrained")
    parser.add_argument("--skip-gradient", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--naive-positions", type=int, default=3)
    parser.add_argument("--naive-cap", type=int, default=200)
    parser.add_argument("--gpt2-tokens", type=int, default=12)
    parser.add_argument("--bandwidth", action="store_true", help="run only the bandwidth experiment")
    parser.add_argument("--ranks", action="store_true", help="run only the candidate-rank measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.bandwidth:
        bandwidth()
        return
    if args.ranks:
        candidate_ranks()
        return
    for name in args.models.split(","):
        if name == "gpt2-small":
            model, prompt = gpt2_small_random(args.gpt2_tokens)
        else:
            model, prompt = li.load_model(name), TEXT
        bench(name, model, prompt, args)


if __name__ == "__main__":
    main()
