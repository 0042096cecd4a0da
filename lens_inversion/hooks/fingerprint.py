"""Fingerprints of a model's unembedding, so a lens can name the model it was fitted for.

Two of them. `unembed_hash` is the tuned-lens package's: tuned-lens 0.2 records it in every
artifact as sha256 of numpy's summarised text of the [vocabulary, d_model] unembedding at
one decimal (`np.array_str(W, precision=1)`); we compute the same string, so artifacts
either package wrote can be checked against a model. It changes with the precision of the
weights. `unembed_fingerprint` is ours and the strict check: 16 fixed bilinear probes of the
unembedding, compared with `fingerprints_match`, equal across dtypes and devices of one
model and far apart for another. A compatibility-mode model (folded, centred weights) has
another hash and another fingerprint: lenses fitted on the raw basis do not silently apply to it.
"""

import hashlib
import math

import numpy as np
import torch

from .adapter import ModelAdapter

_FINGERPRINT_PROBES = 16
_FINGERPRINT_RTOL = 1e-2  # bf16/fp16 copies of a model stay well inside; another model is O(1) away


def unembed_hash(adapter: ModelAdapter) -> str:
    """tuned-lens's `unembed_hash` of this model's unembedding matrix."""
    weight = adapter.model.W_U.detach().T  # TransformerLens stores [d_model, vocab]; HF's lm_head is [vocab, d_model]
    text = np.array_str(weight.cpu().float().numpy(), precision=1)
    return hashlib.sha256(text.encode()).hexdigest()


def unembed_fingerprint(adapter: ModelAdapter) -> list[float]:
    """16 fixed random bilinear probes uᵀ W_U v of the unembedding, normalised; robust to dtype.

    Two copies of one model (float32, bfloat16, another device) agree within 1%; another
    model, or the same one in compatibility mode (centred, folded W_U), does not.
    """
    weight = adapter.W_U.detach().float()  # [d_model, d_vocab]
    gen = torch.Generator().manual_seed(0)
    left = torch.randn(_FINGERPRINT_PROBES, weight.shape[0], generator=gen).to(weight.device)
    right = torch.randn(weight.shape[1], _FINGERPRINT_PROBES, generator=gen).to(weight.device)
    probes = ((left @ weight) * right.T).sum(-1) / math.sqrt(weight.numel())
    return [round(float(p), 6) for p in probes.cpu()]


def fingerprints_match(a: list[float], b: list[float]) -> bool:
    """Whether two `unembed_fingerprint`s name the same unembedding (relative L2 within 1%)."""
    if len(a) != len(b):
        return False
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((ta - tb).norm()) <= _FINGERPRINT_RTOL * max(float(ta.norm()), float(tb.norm()), 1e-12)


__all__ = ["fingerprints_match", "unembed_fingerprint", "unembed_hash"]
