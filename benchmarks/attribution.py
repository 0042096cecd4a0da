"""Occlusion and gradient × input: lens_inversion vs captum and a naive loop, in one run.

Occlusion replaces each prompt token by the pad token and measures the drop of the
log-probability of the model's top next token (captum's LLMAttribution measure,
`metric="logprob_drop"` here), five ways on the same HF-booted GPT-2-style model:

  - naive loop: one bridge forward per token;
  - captum `LLMAttribution(FeatureAblation)`: one HF forward per token;
  - captum `FeatureAblation(perturbations_per_eval=chunk)`: batched HF forwards;
  - li.attribute(reuse="recompute"): batched full forwards, unembedding at the last
    position only;
  - li.attribute(reuse="auto"): the clean prefix's keys/values reused, only positions
    ≥ the first occluded one recomputed (grouped by start).

Agreement: the largest |difference| and Spearman's ρ between each method's scores and
captum LLMAttribution's. Gradient × input is timed against one bare forward + backward of
the HF model from its input embeddings.

Run: python -m benchmarks.attribution [--shape small|gpt2] [--lengths 16 64 256] [--threads 1]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    "small": dict(n_layer=6, n_embd=256, n_head=4, vocab_size=8192),
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),
}
PAD = 1  # "<|pad|>" in the test tokenizer


def build(shape: str):
    """A random GPT-2-style HF model saved locally with the tests' tokenizer, booted as a bridge."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fixture_models import tokenizer
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = tokenizer()
    path = tempfile.mkdtemp(prefix="li-bench-attr-")
    GPT2LMHeadModel(GPT2Config(n_positions=512, **SHAPES[shape])).eval().save_pretrained(path)
    tok.save_pretrained(path)
    bridge = TransformerBridge.boot_transformers(path, device="cpu").eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge, tok


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.double().argsort().argsort().double()
    rb = b.double().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()))


def naive_loop(bridge, ids, predicted):
    with torch.no_grad():
        clean = bridge(ids, attention_mask=torch.ones_like(ids))[0, -1].log_softmax(-1)[predicted]
        out = torch.zeros(ids.shape[1])
        for c in range(ids.shape[1]):
            t = ids.clone()
            t[0, c] = PAD
            out[c] = clean - bridge(t, attention_mask=torch.ones_like(t))[0, -1].log_softmax(-1)[predicted]
    return out


def captum_llm(hf, tok, ids, predicted):
    from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

    inp = TextTokenInput("x", tok, baselines=PAD)
    inp.inp_tensor = inp.itp_tensor = ids
    inp.values = tok.convert_ids_to_tokens(ids[0].tolist())
    inp.n_itp_features = ids.shape[1]
    llm = LLMAttribution(FeatureAblation(hf), tok)
    with torch.no_grad():
        result = llm.attribute(inp, target=torch.tensor([predicted]))
    return result.seq_attr.float()


def captum_batched(hf, ids, predicted, chunk):
    from captum.attr import FeatureAblation

    def forward(batch):
        logits = hf(batch, attention_mask=torch.ones_like(batch)).logits[:, -1]
        return logits.log_softmax(-1)[:, predicted]

    with torch.no_grad():
        attr = FeatureAblation(forward).attribute(ids, baselines=PAD, perturbations_per_eval=chunk)
    return attr[0].float()


def bare_forward_backward(hf, ids, predicted):
    embeds = hf.get_input_embeddings()(ids).detach().requires_grad_(True)
    hf(inputs_embeds=embeds).logits[0, -1, predicted].backward()
    return embeds.grad


def run(shape: str, lengths: list[int], threads: int) -> None:
    torch.set_num_threads(threads)
    bridge, tok = build(shape)
    print(f"model: random GPT-2 ({shape}: {SHAPES[shape]}), HF-booted bridge, {threads} thread(s), CPU")
    header = (
        f"{'tokens':>6} {'method':<40} {'seconds':>8} {'vs LLMAttr':>10} {'vs batched FA':>13} {'max|Δ|':>9} {'ρ':>6}"
    )
    print(header)
    print("-" * len(header))
    for n in lengths:
        bench_length(bridge, tok, n)


def bench_length(bridge, tok, n: int) -> None:
    import lens_inversion.attribution as la

    hf = bridge.original_model
    generator = torch.Generator().manual_seed(n)
    ids = torch.randint(2, len(tok), (1, n), generator=generator)
    with torch.no_grad():
        # the top next token that the tokenizer decodes to clean text (captum prints it)
        ranked = bridge(ids, attention_mask=torch.ones_like(ids))[0, -1, : len(tok)].argsort(descending=True)
        predicted = next(int(i) for i in ranked if "\ufffd" not in tok.decode([int(i)]))
    repeats = 3 if n <= 16 else 1
    chunk = max(1, 2048 // n)

    def ours(reuse):
        result = la.attribute(
            bridge,
            ids,
            method="occlusion",
            target=predicted,
            metric="logprob_drop",
            baseline=PAD,
            include_bos=True,
            normalize="none",
            reuse=reuse,
            progress=False,
        )
        return result.raw_scores.float()

    rows = [
        ("naive loop (bridge, 1 forward/token)", lambda: naive_loop(bridge, ids, predicted)),
        ("captum LLMAttribution(FeatureAblation)", lambda: captum_llm(hf, tok, ids, predicted)),
        (f"captum FeatureAblation batched ({chunk})", lambda: captum_batched(hf, ids, predicted, chunk)),
        ("li.attribute occlusion, recompute", lambda: ours("recompute")),
        ("li.attribute occlusion, reuse=auto", lambda: ours("auto")),
    ]
    times, scores = {}, {}
    for name, fn in rows:
        times[name], scores[name] = timed(fn, repeats)
    llm, batched = rows[1][0], rows[2][0]
    for name, _ in rows:
        diff = float((scores[name] - scores[llm]).abs().max())
        print(
            f"{n:>6} {name:<40} {times[name]:>8.3f} {times[llm] / times[name]:>9.2f}x "
            f"{times[batched] / times[name]:>12.2f}x {diff:>9.2e} {spearman(scores[name], scores[llm]):>6.3f}",
            flush=True,
        )
    bare, _ = timed(lambda: bare_forward_backward(hf, ids, predicted), repeats + 2)
    gxi, _ = timed(lambda: la.attribute(bridge, ids, include_bos=True, target=predicted, progress=False), repeats + 2)
    print(f"{n:>6} {'bare HF forward + backward':<40} {bare:>8.3f}")
    print(f"{n:>6} {'li.attribute grad_x_input':<40} {gxi:>8.3f}   ({gxi / bare:.2f}x the bare pass)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    run(args.shape, args.lengths, args.threads)


if __name__ == "__main__":
    main()
