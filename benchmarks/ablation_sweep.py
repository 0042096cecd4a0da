"""Batched ablation sweep vs a TransformerLens-style per-cell patching loop.

Zero-ablates resid_pre at every (layer, position) of a 64-token prompt and measures
KL(clean ‖ ablated) at the last token, three ways, in one run:
  - per-cell loop: one `run_with_hooks` forward per cell (what TransformerLens's
    `generic_activation_patch` / `get_act_patch_resid_pre` do);
  - batched naive: one batched forward per layer over all positions (full model, full
    unembedding);
  - li.ablation_sweep: lower blocks at batch 1, rows expanded at the ablated layer,
    the clean prefix's keys/values reused (HF-booted bridges), unembedding at the
    readout token only.

Run: python -m benchmarks.ablation_sweep [--shape small|gpt2] [--backend hf|native] [--threads 2]
"""

import argparse
import time

import torch

SHAPES = {
    "small": dict(n_layers=6, d_model=256, n_heads=4, d_head=64, d_vocab=8192),
    "gpt2": dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_vocab=50257),
}


def build(shape: str, backend: str):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    if backend == "hf":  # a random GPT-2 saved locally and booted through Hugging Face
        import tempfile

        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        size = SHAPES[shape]
        config = GPT2Config(
            vocab_size=size["d_vocab"],
            n_positions=128,
            n_embd=size["d_model"],
            n_layer=size["n_layers"],
            n_head=size["n_heads"],
        )
        path = tempfile.mkdtemp(prefix="li-bench-")
        GPT2LMHeadModel(config).save_pretrained(path)
        return TransformerBridge.boot_transformers(path, device="cpu").eval()
    cfg = TransformerBridgeConfig(
        n_ctx=128,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=0,
        device="cpu",
        **SHAPES[shape],
    )
    return TransformerBridge.boot_native(cfg).eval()


def kl_last(clean, logits):
    p = clean[0, -1].log_softmax(-1)
    return (p.exp() * (p - logits[:, -1].log_softmax(-1))).sum(-1)


def per_cell_loop(model, tokens, n_layers):
    values = torch.empty(n_layers, tokens.shape[1])
    clean = model(tokens)
    for layer in range(n_layers):
        for pos in range(tokens.shape[1]):

            def zero(x, hook, pos=pos):
                x = x.clone()
                x[:, pos] = 0
                return x

            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", zero)])
            values[layer, pos] = kl_last(clean, logits)[0]
    return values


def transformer_lens_patching(model, tokens):
    """TransformerLens's own `get_act_patch_resid_pre`, patching in an all-zero cache."""
    from transformer_lens import patching

    clean = model(tokens)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))
    for name in list(cache.keys()):
        cache.cache_dict[name] = torch.zeros_like(cache.cache_dict[name])
    return patching.get_act_patch_resid_pre(model, tokens, cache, lambda logits: kl_last(clean, logits)[0])


def batched_naive(model, tokens, n_layers, chunk=32):
    n_pos = tokens.shape[1]
    values = torch.empty(n_layers, n_pos)
    clean = model(tokens)
    for layer in range(n_layers):
        for start in range(0, n_pos, chunk):
            rows = torch.arange(start, min(start + chunk, n_pos))

            def zero(x, hook, rows=rows):
                x = x.clone()
                x[torch.arange(len(rows)), rows] = 0
                return x

            batch = tokens.expand(len(rows), -1)
            logits = model.run_with_hooks(batch, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", zero)])
            values[layer, rows] = kl_last(clean, logits)
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=tuple(SHAPES), default="small")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--backend", choices=("hf", "native"), default="hf", help="HF-booted (key/value cache) or native bridge"
    )
    parser.add_argument("--skip-loop", action="store_true", help="skip the slow per-cell loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lens_inversion.ablation as ablation

    model = build(args.shape, args.backend)
    n_layers = model.cfg.n_layers
    tokens = torch.randint(
        0, SHAPES[args.shape]["d_vocab"], (1, args.tokens), generator=torch.Generator().manual_seed(0)
    )
    rows = []
    with torch.no_grad():
        model(tokens)  # warm-up
        timings = {}
        if not args.skip_loop:
            t = time.perf_counter()
            loop = per_cell_loop(model, tokens, n_layers)
            timings["per-cell loop (TransformerLens style)"] = (time.perf_counter() - t, loop)
            t = time.perf_counter()
            tl = transformer_lens_patching(model, tokens)
            timings["transformer_lens.patching.get_act_patch_resid_pre"] = (time.perf_counter() - t, tl)
        t = time.perf_counter()
        naive = batched_naive(model, tokens, n_layers)
        timings["batched forward per layer"] = (time.perf_counter() - t, naive)
    t = time.perf_counter()
    ours = ablation.ablation_sweep(model, tokens, ablation="zero", site="resid_pre", metric="kl", progress=False).values
    timings["li.ablation_sweep"] = (time.perf_counter() - t, ours)
    reference = timings.get("per-cell loop (TransformerLens style)", timings["batched forward per layer"])
    print(
        f"{args.backend} bridge, shape={args.shape} {SHAPES[args.shape]}, {args.tokens} tokens, "
        f"{n_layers * args.tokens} cells, {args.threads} threads"
    )
    print(f"{'method':52s} {'seconds':>8s} {'speed-up':>9s} {'max |diff| vs loop':>19s}")
    for name, (seconds, values) in timings.items():
        diff = (values - reference[1]).abs().max().item()
        rows.append((name, seconds))
        print(f"{name:52s} {seconds:8.2f} {reference[0] / seconds:8.1f}x {diff:19.2e}")


if __name__ == "__main__":
    main()
