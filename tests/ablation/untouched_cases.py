import torch

from lens_inversion.ablation import (
    Ablate,
    BypassLayerNorm,
    RemoveResidual,
    TruncateWidth,
    ablated,
    ablation_sweep,
    bandwidth,
)

PROMPT = "The sky is blue."


def _context(model, *specs):
    with ablated(model, *specs), torch.no_grad():
        model(torch.tensor([[1, 2, 3, 4]]))


def _no_forward(model):
    with ablated(model, RemoveResidual(0)):
        pass


CASES = [
    ("ablated-residual-norms", lambda m: _context(m, RemoveResidual(0, around="attn"), BypassLayerNorm(which="all"))),
    ("ablated-mean", lambda m: _context(m, Ablate("blocks.1.hook_resid_mid[:, 1, :]", mode="mean", reference=PROMPT))),
    ("ablated-truncate", lambda m: _context(m, TruncateWidth("resid_post", keep=10))),
    ("sweep-zero", lambda m: ablation_sweep(m, PROMPT, progress=False)),
    ("sweep-widths", lambda m: ablation_sweep(m, PROMPT, ablation="truncate", widths=[8, 32], progress=False)),
    (
        "bandwidth",
        lambda m: bandwidth(m, PROMPT, target="blocks.0.hook_resid_post", widths=[8, 64], invert="no", progress=False),
    ),
]
ERROR_CASES = [
    ("ablated-bad-layer", lambda m: _context(m, RemoveResidual(9))),
    ("ablated-no-forward", _no_forward),
    ("sweep-bad-site", lambda m: ablation_sweep(m, PROMPT, target="logits", progress=False)),
    ("sweep-resample-no-reference", lambda m: ablation_sweep(m, PROMPT, ablation="resample", progress=False)),
    (
        "bandwidth-feature-slice",
        lambda m: bandwidth(m, PROMPT, target="blocks.0.hook_resid_post[:, :, :8]", progress=False),
    ),
]
