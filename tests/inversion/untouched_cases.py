import torch

from lens_inversion.inversion import (
    clamped_walk,
    decode_embeddings,
    invert,
    invert_gradient,
    orthogonal_walk,
    visualize_feature,
)

PROMPT = "The sky is blue."
T = "blocks.0.hook_resid_post"
QUICK = dict(steps=2, progress=False)

def _embeds(model, batch):
    """Random inputs from a local generator (the test itself must not move the global RNG)."""
    return torch.randn(batch, 3, model.cfg.d_model, generator=torch.Generator().manual_seed(0))


CASES = [
    ("invert-embedding", lambda m: invert(m, PROMPT, target=T, n_restarts=2, **QUICK)),
    ("invert-direct-sequential", lambda m: invert(m, PROMPT, target=T, method="direct", sequential=True, **QUICK)),
    (
        "invert-gradient-sliced",
        lambda m: invert_gradient(m, PROMPT, target=f"{T}[:, 1:, :8]", optimizer="adam", **QUICK),
    ),
    ("decode-embeddings", lambda m: decode_embeddings(m, _embeds(m, 1), top_k=2)),
    ("visualize-feature", lambda m: visualize_feature(m, target=f"{T}[:, :, 2:4]", n_tokens=1, **QUICK)),
    ("orthogonal-walk", lambda m: orthogonal_walk(m, PROMPT, target=T, **QUICK)),
    ("clamped-walk", lambda m: clamped_walk(m, PROMPT, target=T, inner_steps=2, **QUICK)),
    ("invert-exact", lambda m: invert(m, PROMPT, target=f"{T}[:, 1:, :8]", method="exact", progress=False)),
]
ERROR_CASES = [
    ("invert-bad-method", lambda m: invert(m, PROMPT, target=T, method="nope")),
    ("invert-bad-layer", lambda m: invert(m, PROMPT, target="blocks.9.hook_resid_post", **QUICK)),
    ("invert-bad-loss", lambda m: invert(m, PROMPT, target=T, loss="l7", **QUICK)),
    ("visualize-bad-objective", lambda m: visualize_feature(m, target=T, n_tokens=1, objective="max")),
    ("walk-bad-dtype", lambda m: orthogonal_walk(m, PROMPT, target=T, dtype="float16")),
    ("invert-exact-bad-order", lambda m: invert(m, PROMPT, target=T, method="exact", order="best")),
    ("clamped-walk-bad-clamp", lambda m: clamped_walk(m, PROMPT, target=T, clamp=50)),
]
