"""The tuned-lens package's fingerprint of a model's unembedding, so a lens can name its model.

tuned-lens 0.2 records `unembed_hash` in every artifact: sha256 of numpy's summarised text of
the [vocabulary, d_model] unembedding at one decimal (`np.array_str(W, precision=1)`). We
compute the same string, so artifacts either package wrote can be checked against a model.
A compatibility-mode model (folded, centred weights) has another hash: lenses fitted on the
raw basis do not silently apply to it.
"""

import hashlib

import numpy as np

from .adapter import ModelAdapter


def unembed_hash(adapter: ModelAdapter) -> str:
    """tuned-lens's `unembed_hash` of this model's unembedding matrix."""
    weight = adapter.model.W_U.detach().T  # TransformerLens stores [d_model, vocab]; HF's lm_head is [vocab, d_model]
    text = np.array_str(weight.cpu().float().numpy(), precision=1)
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = ["unembed_hash"]
