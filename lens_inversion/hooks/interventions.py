"""Attach temporary hooks through one context manager that always cleans up."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeGuard

import torch
from torch import nn

from ..errors import HookNeverFiredError, TargetError

HookFn = Callable[[torch.Tensor, nn.Module], "torch.Tensor | None"]


def hook_point(model: nn.Module, name: str) -> nn.Module:
    """Return the HookPoint module called `name`, or raise naming close matches."""
    points: dict[str, nn.Module] = model.hook_dict  # type: ignore[assignment]  # TransformerLens attribute, typed by Module.__getattr__
    if name not in points:
        stem = name.rsplit(".", 1)[-1]
        close = sorted(n for n in points if n.endswith(stem))[:8]
        raise TargetError(f"The model has no hook point {name!r}; similar names: {close}.")
    return points[name]


class _LensHookPoint(Protocol):
    """A TransformerLens HookPoint's own hook bookkeeping (both major versions)."""

    fwd_hooks: list

    def add_hook(self, hook: Callable, dir: str = ..., is_permanent: bool = ...) -> Any: ...


def _registers_lens_hooks(point: nn.Module) -> TypeGuard[_LensHookPoint]:
    """Whether `point` is a TransformerLens HookPoint with its own hook bookkeeping."""
    return callable(getattr(point, "add_hook", None)) and isinstance(getattr(point, "fwd_hooks", None), list)


def _add(point: nn.Module, fn: Callable) -> Callable[[], None]:
    """Register forward hook `fn(output, hook)` on `point`; return its remover.

    On a TransformerLens HookPoint the hook goes through the point's own `add_hook`, so
    it is listed in `point.fwd_hooks`: the bridge consults that list (`has_hooks`) and
    bypasses a point it believes unhooked (Granite's scaled embedding and residual
    contributions), and it converts the activation to the layout TransformerLens users
    see (OPT's flattened MLP region is unflattened to [batch, pos, d]). It is registered
    as permanent so that a user's `reset_hooks()` inside an `ablated` block cannot drop
    it; we always remove it ourselves.
    """
    if not _registers_lens_hooks(point):
        handle = point.register_forward_hook(lambda module, inputs, output: fn(output, module))
        return handle.remove

    def lens_hook(activation, hook):
        return fn(activation, hook)

    before = list(point.fwd_hooks)
    lens_handle = point.add_hook(lens_hook, dir="fwd", is_permanent=True)
    if lens_handle is None:  # TransformerLens 3.x returns nothing: the new entry of fwd_hooks is ours
        lens_handle = next(h for h in point.fwd_hooks if all(h is not b for b in before))

    def remove() -> None:
        lens_handle.hook.remove()
        point.fwd_hooks[:] = [h for h in point.fwd_hooks if h is not lens_handle]

    return remove


def _owner(model: nn.Module, point: nn.Module) -> nn.Module | None:
    """The bridge component whose `hook_out` is `point` (None if none or not found)."""
    name = getattr(point, "name", None)
    if not isinstance(name, str) or not name.endswith(".hook_out"):
        return None
    try:
        owner = model.get_submodule(name.removesuffix(".hook_out"))
    except AttributeError:
        return None
    return owner if getattr(owner, "hook_out", None) is point else None


def _tuple_output(module, inputs, output):
    """A list output as a tuple (the HF loop indexes it; the bridge only hooks tuples)."""
    return tuple(output) if isinstance(output, list) else None


def _list_output_repairs(model: nn.Module, points: Sequence[nn.Module]) -> list:
    """Let a block's output hook fire when its Hugging Face layer returns a list.

    The bridge's block hooks the first element of a tuple or a bare tensor output and
    passes anything else through unhooked, so `hook_out` (HT's `hook_resid_post`) of a
    layer that returns a list (OpenAI-GPT's `Block`) never fires. During our hooks the
    layer's list output is turned into the equivalent tuple first.
    """
    handles = []
    seen: set[int] = set()
    for point in points:
        owner = _owner(model, point)
        original = getattr(owner, "original_component", None)
        if not callable(getattr(owner, "_apply_output_hook", None)) or not isinstance(original, nn.Module):
            continue
        if id(original) in seen or getattr(original, REPAIRED, False):
            continue
        seen.add(id(original))
        handles.append(original.register_forward_hook(_tuple_output))
    return handles


REPAIRED = "_lens_inversion_list_output_repaired"  # set on a layer that carries a permanent repair


def repair_list_outputs(model: nn.Module) -> int:
    """Permanently let every block's output hook fire (see `_list_output_repairs`).

    Installed by `load_model`, so TransformerLens's own hooks (`run_with_cache`,
    `model.hooks`) see `hook_resid_post` too. A no-op hook for layers that return a
    tuple or a tensor. Returns how many layers got the repair.
    """
    count = 0
    for block in getattr(model, "blocks", []) or []:
        original = getattr(block, "original_component", None)
        if not callable(getattr(block, "_apply_output_hook", None)) or not isinstance(original, nn.Module):
            continue
        if getattr(original, REPAIRED, False):
            continue
        original.register_forward_hook(_tuple_output)
        object.__setattr__(original, REPAIRED, True)
        count += 1
    return count


@contextmanager
def attached(
    model: nn.Module,
    hooks: Sequence[tuple[str, HookFn]],
    *,
    require_fire: bool = True,
) -> Iterator[list[int]]:
    """Attach forward hooks `(name, fn(activation, hook))` for the body, then remove them.

    The hooks are registered through each HookPoint's own `add_hook` (so TransformerLens
    knows the point is hooked and never bypasses it) and removed by their own handles, so
    the user's TransformerLens hooks are never touched. They are removed in `finally`,
    even when the body or a hook raises. When the body finishes normally and
    `require_fire` is set, a hook that never ran raises HookNeverFiredError (a silent
    no-op would otherwise corrupt the result).

    Yields:
        The per-hook call counts, updated live.
    """
    counts = [0] * len(hooks)
    removers: list[Callable[[], None]] = []
    try:
        points = [hook_point(model, name) for name, _ in hooks]
        removers += [handle.remove for handle in _list_output_repairs(model, points)]
        for index, ((_, fn), point) in enumerate(zip(hooks, points, strict=True)):

            def counted(output, module, index=index, fn=fn):
                counts[index] += 1
                return fn(output, module)

            removers.append(_add(point, counted))
        yield counts
        silent = [name for (name, _), n in zip(hooks, counts, strict=False) if n == 0]
    finally:
        for remove in reversed(removers):
            remove()
    if require_fire and silent:
        raise HookNeverFiredError(
            f"These hooks never fired during the forward pass: {silent}. "
            "The site may lie beyond the layer the run stopped at, or be gated off."
        )
