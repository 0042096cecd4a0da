"""Tuned-lens training: li.TunedLens.train against the tuned-lens 0.2 package's trainer, one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/tuned_lens_training.py [--steps 40] [--threads 1]

Both train on the embedded `tiny` model with the same tokens in the same order (the model's
training text cut into 128-token chunks, no shuffle), the same number of steps and tokens
per step and the same micro-batch, and are measured on the same held-out text (its
`heldout.txt`) with the same evaluator (their lens is read through our loader, whose
translators equal theirs to 1e-6: tests/lens/test_tuned_lens.py).

Theirs: the package's full `train_loop.Train` needs torchdata's DataLoader2 (removed from
torchdata, no build for torch 2.13), datasets and simple_parsing, so this drives the
package's own `TunedLens` module (`TunedLens.from_model` on `AutoModelForCausalLM`) with
its `scripts/ingredients.py::Optimizer` settings (SGD, Nesterov, lr = 1 − β, weight decay
1e-3, `get_linear_schedule_with_warmup` with 0 warm-up) and the loop of
`scripts/train_loop.py::Train.execute` line for line: a no-grad forward with
`output_hidden_states=True`, then per layer under `torch.autocast(bfloat16)` the KL
`sum(p (log p − log_softmax z)).mean()` divided by the accumulation steps and its backward,
clipping at 1, `zero_grad(set_to_none=False)`, scheduler step. On a CPU without native
bfloat16 the autocast is slow, so "theirs fp32" (the same loop without autocast) is timed too.
Ours runs on the TransformerBridge through TransformerLens's hooks, tokenization included.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

import lens_inversion as li
from lens_inversion.hooks.adapter import adapter_for
from lens_inversion.lens.token_stream import token_chunks
from lens_inversion.lens.tuned import TunedLens
from lens_inversion.lens.tuned_eval import evaluate_lens
from lens_inversion.models.corpus import documents
from lens_inversion.models.loader import ASSETS

TINY = ASSETS / "tiny"


def package():
    """The tuned-lens package's TunedLens class, on its Hugging Face path (its TL check raises on TL 4)."""
    try:
        import tuned_lens.model_surgery as surgery
        import tuned_lens.nn.unembed as unembed
        from tuned_lens.nn.lenses import TunedLens as PkgLens
    except ImportError as error:
        raise SystemExit(f"Needs the tuned-lens package: pip install --no-deps tuned-lens==0.2.0 ({error})") from None
    surgery._transformer_lens_available = False
    unembed._transformer_lens_available = False
    return PkgLens


def their_training(hf, chunks: torch.Tensor, *, steps: int, micro: int, autocast: bool):
    """tuned-lens 0.2's Train.execute loop (KL loss, SGD defaults) on `chunks` [steps · per_step, seq]."""
    from transformers import get_linear_schedule_with_warmup

    lens = package().from_model(hf)
    beta = 0.9
    opt = torch.optim.SGD(lens.parameters(), lr=1.0 * (1 - beta), momentum=beta, nesterov=True, weight_decay=1e-3)
    scheduler = get_linear_schedule_with_warmup(opt, 0, steps - 0)
    batches = chunks.split(micro)
    grad_acc_steps = len(batches) // steps
    for batch_idx, batch in enumerate(batches):
        with torch.no_grad():
            output = hf(input_ids=batch, output_hidden_states=True)
        labels = output.logits.float().log_softmax(dim=-1)
        for i, h in enumerate(output.hidden_states[:-1]):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = lens(h, idx=i)
                loss = torch.sum(labels.exp() * (labels - logits.log_softmax(-1)), dim=-1).mean()
                scaled_loss = loss / grad_acc_steps
            scaled_loss.backward()
        if batch_idx % grad_acc_steps == grad_acc_steps - 1:
            torch.nn.utils.clip_grad_norm_(lens.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=False)
            scheduler.step()
    return lens


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--tokens-per-step", type=int, default=8192)
    parser.add_argument("--micro-batch", type=int, default=64, help="chunks per forward, both trainers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-bf16", action="store_true", help="leave out their (slow on CPU) bfloat16 autocast run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    model = li.load_model("tiny", device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(TINY)).eval().requires_grad_(False)  # local  # offline-ok
    seq_len, per_step = 128, args.tokens_per_step // 128
    texts = list(documents(args.steps * per_step * 4, seed=0))  # ~50 tokens a document: more than enough
    stream = token_chunks(adapter_for(model), texts, seq_len=seq_len)
    chunks = torch.stack([next(stream) for _ in range(args.steps * per_step)])
    held_out = (TINY / "heldout.txt").read_text().splitlines()

    ours, t_ours = timed(lambda: TunedLens.train(
        model, texts, steps=args.steps, tokens_per_step=args.tokens_per_step, seq_len=seq_len, shuffle_buffer=0,
        micro_batch=args.micro_batch, progress=False))
    runs = {"ours": (ours, t_ours)}
    runs["theirs fp32"] = timed(lambda: their_training(hf, chunks, steps=args.steps, micro=args.micro_batch,
                                                       autocast=False))
    if not args.skip_bf16:
        runs["theirs bf16"] = timed(lambda: their_training(hf, chunks, steps=args.steps, micro=args.micro_batch,
                                                           autocast=True))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (lens, seconds) in runs.items():
            if name != "ours":
                lens.save(Path(tmp) / name)
                lens = TunedLens.load(Path(tmp) / name, model=model)
            results[name] = (evaluate_lens(model, lens, held_out, seq_len=seq_len), seconds)
    report(results, args)


def report(results: dict, args) -> None:
    tokens = args.steps * args.tokens_per_step
    first = next(iter(results.values()))[0]
    print(f"tuned-lens training on tiny: {args.steps} steps x {args.tokens_per_step} tokens = {tokens:,} tokens, "
          f"micro-batch {args.micro_batch} x 128, {args.threads} thread(s); held-out {first.tokens:,} tokens")
    names = list(results)
    print(f"{'row':>6} " + " ".join(f"{n:>12}" for n in names) + f" {'logit lens':>12}   (held-out KL, nats)")
    for i, row in enumerate(first.rows):
        values = " ".join(f"{results[n][0].kl[i]:12.4f}" for n in names)
        print(f"{row:>6} {values} {first.logit_kl[i]:12.4f}")
    print(f"{'time':>6} " + " ".join(f"{results[n][1]:11.1f}s" for n in names))
    t_ours = results["ours"][1]
    for name in names[1:]:
        pairs = list(zip(results["ours"][0].kl, results[name][0].kl, strict=True))
        strictly = all(o <= t for o, t in pairs)
        within = max((o - t) / t for o, t in pairs)
        print(f"ours / {name}: time x{t_ours / results[name][1]:.2f}; held-out KL <= theirs at every row: {strictly} "
              f"(ours - theirs at most {within:+.1e} relative)")


if __name__ == "__main__":
    main()
