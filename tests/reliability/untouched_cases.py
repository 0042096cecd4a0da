"""More calls for the model-untouched matrix (tests/test_model_untouched.py).

The areas register their main paths; these add the public functions and options they
leave out (ModelAdapter, caches, references, callables, nested contexts, activations as
input) and errors raised late: inside a loop, after hooks are attached and parameters
were switched to requires_grad, or inside an `ablated` block.
"""

import torch

import lens_inversion as li

PROMPT = "The sky is blue."
T = "blocks.0.hook_resid_post"
Q = dict(progress=False)


def _adapter(model):
    adapter = li.ModelAdapter(model)
    batch = adapter.prompt([PROMPT, "A cat"])
    with torch.no_grad():
        run = adapter.run(batch.tokens, capture=[(li.Site.RESID_MID, 1)], need_logits=True)
        adapter.lens_logits(run[(li.Site.RESID_MID, 1)])
    return adapter.embed(batch.tokens), adapter.embed_scale


def _lens_from_cache(model):
    tokens = li.ModelAdapter(model).prompt(PROMPT).tokens
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: "hook_resid" in n)
    return li.logit_lens(model, tokens, cache=cache, rows="sublayers", positions=slice(1, None), top_k=3, **Q)


def _exact_from_activation(model):
    target = f"{T}[:, 1:, :16]"
    act = li.Target.parse(target).extract(model, PROMPT)
    return li.invert(model, act, target=target, method="exact", n_pos=act.shape[1] + 1, **Q)


def _nested_lens(model):
    with li.ablated(model, li.ZeroComponent(0, "attn"), li.FreezeLayerNorm(which="final")):
        return li.logit_lens(model, PROMPT, **Q)


def _ablated_inner_error(model):
    with li.ablated(model, li.RemoveResidual(0, around="mlp")):
        li.logit_lens(model, PROMPT, **Q)
        li.logit_lens(model, "", **Q)  # PromptError inside the block, ablation hooks attached


def _faithfulness_bad_steps(model):
    result = li.attribute(model, PROMPT, method="combined", **Q)
    return li.faithfulness(model, PROMPT, result, steps=-1, **Q)


def _clamp_on_bos(model):
    return li.clamped_walk(model, PROMPT, target=T, clamp=[0, 2], steps=2, inner_steps=2, **Q)


def _embeds(model):
    """Random inputs from a local generator (the test itself must not move the global RNG)."""
    return torch.randn(2, 3, model.cfg.d_model, generator=torch.Generator().manual_seed(0))


CASES = [
    ("model-adapter", _adapter),
    ("logit-lens-from-cache", _lens_from_cache),
    ("logit-lens-layers-positions", lambda m: li.logit_lens(m, PROMPT, layers=-1, positions=[0, -1], compare="input", **Q)),
    (
        "attribute-occlusion-recompute-window",
        lambda m: li.attribute(m, PROMPT, method="occlusion", window=2, reuse="recompute", metric="kl", **Q),
    ),
    ("attribute-token-target-signed", lambda m: li.attribute(m, PROMPT, answer=5, signed=True, baseline="zero", **Q)),
    (
        "invert-direct-allowed-mixed",
        lambda m: li.invert(
            m, PROMPT, target=T, method="direct", allowed_tokens=list(range(50)), start="mixed", steps=2, n_restarts=2, **Q
        ),
    ),
    ("invert-two-layers-adam", lambda m: li.invert(m, PROMPT, target=[T, "resid_post.1[:, -1]"], optimizer="adam", steps=2, **Q)),
    ("invert-exact-from-activation", _exact_from_activation),
    (
        "decode-embeddings-cosine-allowed",
        lambda m: li.decode_embeddings(m, _embeds(m), decoding="cosine", allowed_tokens=[3, 4, 5], top_k=2),
    ),
    (
        "sweep-resample-reference",
        lambda m: li.ablation_sweep(
            m, PROMPT, ablation="resample", reference=["A cat sat on the mat by the door.", "The sea is deep and the sun is bright."], **Q
        ),
    ),
    ("sweep-mean-embed-loss", lambda m: li.ablation_sweep(m, PROMPT, ablation="mean", target="embed", metric="cross_entropy", **Q)),
    (
        "sweep-callable-metric",
        lambda m: li.ablation_sweep(m, PROMPT, target="attn_out", metric=lambda a, c: (a[:, -1] - c[:, -1]).abs().sum(-1), **Q),
    ),
    ("ablated-nested-logit-lens", _nested_lens),
    ("faithfulness-random-orders", lambda m: li.faithfulness(m, PROMPT, li.attribute(m, PROMPT, **Q), n_random=2, steps=3, **Q)),
    ("bandwidth-with-exact-inversion", lambda m: li.bandwidth(m, PROMPT, target="resid_post.0", widths=[16, 64], invert="yes", **Q)),
    ("visualize-feature-scan", lambda m: li.visualize_feature(m, target=f"{T}[:, -1, 3]", n_tokens=1, steps=2, scan=True, **Q)),
    ("target-extract-short-form", lambda m: li.Target.parse("resid_mid.-1[:, -1, :]").extract(m, [PROMPT, "A cat sat"])),
]

ERROR_CASES = [
    ("sweep-metric-wrong-shape-in-loop", lambda m: li.ablation_sweep(m, PROMPT, metric=lambda a, c: a.sum(), **Q)),
    ("invert-loss-not-a-tensor-in-loop", lambda m: li.invert(m, PROMPT, target=T, loss=lambda o, t: 1.0, steps=3, **Q)),
    ("ablated-error-inside-block", _ablated_inner_error),
    ("ablated-mean-empty-reference", lambda m: li.ablated(m, li.Ablate(T, mode="mean", reference="")).__enter__()),
    ("decode-embeddings-nan", lambda m: li.decode_embeddings(m, torch.full((1, 2, m.cfg.d_model), float("nan")))),
    ("faithfulness-bad-steps-after-attribution", _faithfulness_bad_steps),
    ("bandwidth-bad-widths", lambda m: li.bandwidth(m, PROMPT, target=T, widths=[0, 999], **Q)),
    ("exact-allowed-out-of-vocab-after-forward", lambda m: li.invert(m, PROMPT, target=T, method="exact", allowed_tokens=[10**6], **Q)),
    ("exact-inf-activation", lambda m: li.invert(m, torch.full((1, 3, m.cfg.d_model), float("inf")), target=T, method="exact", **Q)),
    ("clamped-walk-clamps-bos-after-forward", _clamp_on_bos),
    ("visualize-feature-bad-layer", lambda m: li.visualize_feature(m, target="resid_post.7", n_tokens=1, **Q)),
    ("adapter-multi-token-string", lambda m: li.ModelAdapter(m).token_id("The sky is")),
    ("logit-lens-cache-of-another-prompt", lambda m: li.logit_lens(m, "A cat sat", cache=m.run_with_cache(torch.tensor([[1, 2]]))[1], **Q)),
]
