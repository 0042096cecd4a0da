"""Attach temporary hooks through one context manager that always cleans up."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import HookNeverFiredError, TargetError

HookFn = Callable[[torch.Tensor, nn.Module], "torch.Tensor | None"]


def hook_point(model: nn.Module, name: str) -> nn.Module:
    """Return the HookPoint module called `name`, or raise naming close matches."""
    points = model.hook_dict
    if name not in points:
        stem = name.rsplit(".", 1)[-1]
        close = sorted(n for n in points if n.endswith(stem))[:8]
        raise TargetError(f"The model has no hook point {name!r}; similar names: {close}.")
    return points[name]


@contextmanager
def attached(
    model: nn.Module,
    hooks: Sequence[tuple[str, HookFn]],
    *,
    require_fire: bool = True,
) -> Iterator[list[int]]:
    """Attach forward hooks `(name, fn(activation, hook))` for the body, then remove them.

    The hooks are plain PyTorch handles registered on the HookPoint modules, so the
    user's own TransformerLens hooks are never touched. They are removed in `finally`,
    even when the body or a hook raises. When the body finishes normally and
    `require_fire` is set, a hook that never ran raises HookNeverFiredError (a silent
    no-op would otherwise corrupt the result).

    Yields:
        The per-hook call counts, updated live.
    """
    counts = [0] * len(hooks)
    handles = []
    try:
        for index, (name, fn) in enumerate(hooks):
            point = hook_point(model, name)

            def forward_hook(module, inputs, output, index=index, fn=fn):
                counts[index] += 1
                return fn(output, module)

            handles.append(point.register_forward_hook(forward_hook))
        yield counts
        silent = [name for (name, _), n in zip(hooks, counts, strict=False) if n == 0]
    finally:
        for handle in handles:
            handle.remove()
    if require_fire and silent:
        raise HookNeverFiredError(
            f"These hooks never fired during the forward pass: {silent}. "
            "The site may lie beyond the layer the run stopped at, or be gated off."
        )
