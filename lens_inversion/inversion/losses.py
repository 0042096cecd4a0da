"""Distances between an output and its target, per sample (pure tensor functions).

Every distance is averaged over the elements it compares, so one learning rate suits
targets of any size: `l1` is mean |d|, `l2` the root mean square of d, `cosine` is
1 − cos φ of the flattened outputs, `combined` is α(1 − cos φ) + β·l1.
"""

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

from ..errors import LensInversionError, OptionError
from ..validation import check_choice

LossName = Literal["l1", "l2", "cosine", "combined"]
LOSSES = ("l1", "l2", "cosine", "combined")
LossFn = Callable[[Tensor, Tensor], Tensor]


def l1(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference per sample: [batch, ...] -> [batch]."""
    return (output - target).abs().flatten(1).mean(1)


def l2(output: Tensor, target: Tensor) -> Tensor:
    """Root mean squared difference per sample: [batch, ...] -> [batch]."""
    return (output - target).pow(2).flatten(1).mean(1).clamp_min(1e-30).sqrt()


def cosine(output: Tensor, target: Tensor) -> Tensor:
    """1 − cos φ between the flattened output and target, per sample."""
    return 1.0 - torch.nn.functional.cosine_similarity(output.flatten(1), target.flatten(1), dim=1, eps=1e-12)


def combined(output: Tensor, target: Tensor, *, alpha: float = 1.0, beta: float = 1.0) -> Tensor:
    """α(1 − cos φ) + β·l1, per sample."""
    return alpha * cosine(output, target) + beta * l1(output, target)


def loss_function(loss: object, *, alpha: float = 1.0, beta: float = 1.0) -> LossFn:
    """Resolve a loss name (or a user callable returning one value per sample); OptionError otherwise."""
    if callable(loss):
        return _checked(loss)
    check_choice("loss", loss, LOSSES)
    if loss == "combined":
        return lambda o, t: combined(o, t, alpha=alpha, beta=beta)
    named: dict[object, LossFn] = {"l1": l1, "l2": l2, "cosine": cosine}
    return named[loss]


def tensor_sum(terms: Iterable[Tensor]) -> Tensor:
    """The sum of one or more tensors (the builtin `sum` starts from the int 0)."""
    return functools.reduce(operator.add, terms)


def _checked(fn: Callable[..., object]) -> LossFn:
    def wrapped(output: Tensor, target: Tensor) -> Tensor:
        expected = f"one value per sample, shape ({output.shape[0]},), from (output, target) of shape {tuple(output.shape)}"
        try:
            value = fn(output, target)
        except LensInversionError:
            raise
        except Exception as error:
            raise OptionError(
                f"The loss callable raised {type(error).__name__}: {error}; it must return {expected}."
            ) from error
        if not isinstance(value, Tensor):
            raise OptionError(f"A loss callable must return a tensor; got {type(value).__name__}; give {expected}.")
        if value.ndim == 0 and output.shape[0] == 1:
            value = value[None]
        if tuple(value.shape) != (output.shape[0],):
            raise OptionError(f"A loss callable must return {expected}; got shape {tuple(value.shape)}.")
        return value

    return wrapped


def total_distance(fn: LossFn, outputs: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """Sum of the per-sample distances over several targets (several layers at once)."""
    return tensor_sum(fn(o.float(), t.float()) for o, t in zip(outputs, targets, strict=True))
