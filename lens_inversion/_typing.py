"""jaxtyping aliases with one axis vocabulary: batch pos d_model d_vocab layer row."""

from jaxtyping import Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch pos"]
Resid = Float[Tensor, "batch pos d_model"]
Embeds = Float[Tensor, "batch pos d_model"]
Logits = Float[Tensor, "batch pos d_vocab"]
Activation = Float[Tensor, "batch pos feature"]
RowPos = Float[Tensor, "*batch row pos"]

__all__ = ["Activation", "Embeds", "Logits", "Resid", "RowPos", "Tokens"]
