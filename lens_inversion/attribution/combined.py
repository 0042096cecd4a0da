"""Normalisation, the combined score and the rank agreement between two attributions.

Combined score (per output row, over the attributed positions A):

    combined = w_g · g / max_{c∈A} |g_c|  +  w_o · o / max_{c∈A} |o_c|

with g the gradient × input scores, o the occlusion scores and (w_g, w_o) the weights,
(0.5, 0.5) by default. Agreement is Spearman's rank correlation of g and o over A
(ties get their average rank).
"""

import math

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..errors import OptionError

DEFAULT_WEIGHTS = (0.5, 0.5)
NORMALIZE = ("max_abs", "none")
NORMALISATIONS = NORMALIZE  # the old name of the tuple, kept for imports


def max_abs(values: Float[Tensor, "*row pos"], mask: Bool[Tensor, " pos"]) -> Float[Tensor, "*row pos"]:
    """Divide each row by its largest |value| over the attributed positions (zero rows stay zero)."""
    values = torch.where(mask, values, torch.zeros_like(values))
    scale = values.abs().amax(-1, keepdim=True)
    return values / torch.where(scale > 0, scale, torch.ones_like(scale))


def normalise(values: Tensor, mask: Tensor, normalize: str) -> Tensor:
    """Scores as `normalize` asks ("max_abs" per row, or "none"), zero outside the attributed positions."""
    return max_abs(values, mask) if normalize == "max_abs" else torch.where(mask, values, torch.zeros_like(values))


def check_weights(weights) -> tuple[float, float]:
    """Two finite real numbers (grad_x_input, occlusion), as floats."""
    numbers = isinstance(weights, (list, tuple)) and len(weights) == 2 and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights
    )
    if not numbers:
        raise OptionError(f"weights must be two numbers (grad_x_input, occlusion); got {weights!r}.")
    w_g, w_o = (float(w) for w in weights)
    if not (math.isfinite(w_g) and math.isfinite(w_o)):
        raise OptionError(f"weights must be two finite numbers (grad_x_input, occlusion); got {weights!r}.")
    return w_g, w_o


def combine(grad: Tensor, occlusion: Tensor, mask: Tensor, weights: tuple[float, float]) -> Tensor:
    """The documented linear combination of the max-abs normalised scores."""
    w_g, w_o = weights
    return w_g * max_abs(grad, mask) + w_o * max_abs(occlusion, mask)


def _ranks(values: Tensor) -> Tensor:
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=values.dtype)
    for value in values.unique():
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def rank_agreement(a: Float[Tensor, " pos"], b: Float[Tensor, " pos"], mask: Bool[Tensor, " pos"]) -> float:
    """Spearman's ρ between two score vectors over the attributed positions (nan if < 2)."""
    a, b = a[mask].double(), b[mask].double()
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / denom) if denom > 0 else float("nan")
