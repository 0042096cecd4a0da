"""The research's qualitative inversion table on the embedded models, with token accuracies.

Rows: untrained vs trained twin, one block vs all blocks, L1 vs cosine loss, embedding vs
direct method, a restricted vocabulary, a token-sliced target (the first real token
hidden) and a feature-sliced target (half the residual width). Each row inverts the same
prompts with SGD from N(1/2, 1/20) noise, the LR decaying linearly from η to η/10.

Run: python -m benchmarks.inversion_table [--steps 400] [--restarts 4] [--threads 1]
"""

import argparse

import torch

import lens_inversion as li
from lens_inversion.inversion import invert

PROMPTS = ["The sky is blue.", "The cat sat on the mat."]


TWIN = {"tiny": "tiny-untrained", "tiny-untrained": "tiny"}


def rows(n_layers: int, d_model: int, name: str):
    last = n_layers - 1
    yield "1 block, L1", "blocks.0.hook_resid_post", dict(loss="l1")
    yield "1 block, cosine", "blocks.0.hook_resid_post", dict(loss="cosine")
    yield f"all {n_layers} blocks, L1", f"blocks.{last}.hook_resid_post", dict(loss="l1")
    yield f"all {n_layers} blocks, cosine", f"blocks.{last}.hook_resid_post", dict(loss="cosine")
    yield "all blocks, L1, direct", f"blocks.{last}.hook_resid_post", dict(loss="l1", method="direct")
    yield "all blocks, L1, direct, pinv decoding", f"blocks.{last}.hook_resid_post", dict(
        loss="l1", method="direct", decoding="pinv"
    )
    yield f"1 block, L1, embedding of {TWIN[name]}", "blocks.0.hook_resid_post", dict(loss="l1", swap=True)
    yield "all blocks, L1, restricted vocab", f"blocks.{last}.hook_resid_post", dict(loss="l1", restricted=True)
    yield "all blocks, L1, tokens [:, 2:, :]", f"blocks.{last}.hook_resid_post[:, 2:, :]", dict(loss="l1")
    half = d_model // 2
    yield f"all blocks, L1, features [:, :, :{half}]", f"blocks.{last}.hook_resid_post[:, :, :{half}]", dict(loss="l1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="tiny-untrained,tiny")
    parser.add_argument("--only", default="", help="comma-separated parts of row labels to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"steps={args.steps} restarts={args.restarts} prompts={PROMPTS}\n")
    print("| model | experiment | token accuracy | closer than shift | decoded texts |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        model = li.load_model(name, device="cpu")
        adapter = li.ModelAdapter(model)
        # the restricted vocabulary: the prompts' own tokens plus 200 others
        own = {int(t) for p in PROMPTS for t in adapter.prompt(p).tokens[0]}
        others = torch.randperm(adapter.d_vocab, generator=torch.Generator().manual_seed(0))[:200].tolist()
        allowed = sorted(own | set(others))
        for label, target, opts in rows(model.cfg.n_layers, model.cfg.d_model, name):
            if args.only and not any(part in label for part in args.only.split(",")):
                continue
            opts = dict(opts)
            if opts.pop("swap", False):
                opts["embedding_from"] = li.load_model(TWIN[name], device="cpu")
            if opts.pop("restricted", False):
                opts["allowed_tokens"] = allowed
            accs, closer, texts = [], [], []
            for prompt in PROMPTS:
                res = invert(model, prompt, target=target, steps=args.steps, n_restarts=args.restarts,
                             progress=False, **opts)
                accs.append(res.token_accuracy)
                closer.append(bool(res.closer_than_shift))
                texts.append(repr(res.text))
            acc = sum(accs) / len(accs)
            print(f"| {name} | {label} | {acc:.2f} | {sum(closer)}/{len(closer)} | {' / '.join(texts)} |",
                  flush=True)


if __name__ == "__main__":
    main()
