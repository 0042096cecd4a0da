"""Guarantee that a public function leaves the user's model exactly as it found it."""

import dataclasses
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import torch
from torch import Tensor, nn

from .global_state import unchanged

F = TypeVar("F", bound=Callable)

# ids of the models a `preserved` block is active for, in this thread's context
_ACTIVE: ContextVar[frozenset[int]] = ContextVar("lens_inversion_preserved", default=frozenset())


def _hook_keys(module: nn.Module) -> tuple[frozenset, ...]:
    return tuple(
        frozenset(getattr(module, attr, {}).keys())
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    )


def _lens_handles(module: nn.Module) -> dict[str, list]:
    """A TransformerLens HookPoint's own lists of hook handles (what `has_hooks` reads)."""
    return {
        attr: list(table) for attr in ("fwd_hooks", "bwd_hooks") if isinstance(table := getattr(module, attr, None), list)
    }


def _unwired_blocks(model: nn.Module) -> list[nn.Module]:
    """Bridge blocks whose lazily-installed capture hooks are not installed yet.

    Some blocks (Bloom's) never wire them in their own forward; wiring them for a call
    and leaving them would add hooks to the user's model, so they are torn down again.
    """
    return [
        block for block in (getattr(model, "blocks", None) or [])
        if getattr(block, "_capture_hooks_wired", None) is False and callable(getattr(block, "_teardown_capture_hooks", None))
    ]


def _tear_down(blocks: list[nn.Module]) -> None:
    """Remove the capture hooks of bridge blocks `_unwired_blocks` found unwired."""
    for block in blocks:
        block._teardown_capture_hooks()  # type: ignore[operator]  # a bridge block's method, seen through Module.__getattr__


@contextmanager
def bridge_wiring_restored(model: nn.Module) -> Iterator[None]:
    """Leave the bridge's lazily-wired capture hooks as the body found them.

    Enter it before anything wires them (`adapter_for`, `wire_bridge_internals`, a
    forward): the blocks not wired on entry are unwired again on exit, which removes the
    pre-hooks the wiring put on their norms and lets TransformerLens wire them lazily
    later, exactly as it would have. `preserved` does this itself; a context that spans
    user code without `preserved` (`ablated`) should wrap itself in this.
    """
    unwired = _unwired_blocks(model)
    try:
        yield
    finally:
        _tear_down(unwired)


def _transient_tensors(module: nn.Module) -> dict[str, Tensor | None]:
    """Plain attributes holding a tensor or None (captures some backends keep between runs)."""
    return {k: v for k, v in vars(module).items() if v is None or isinstance(v, Tensor)}


def _all_modules(model: nn.Module) -> list[nn.Module]:
    """Every module of `model`, with a bridge's wrapped source model (kept outside its module tree)."""
    seen: dict[int, nn.Module] = {id(m): m for m in model.modules()}
    original = vars(model).get("original_model")
    if isinstance(original, nn.Module):
        seen.update((id(m), m) for m in original.modules())
    return list(seen.values())


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run the body in eval mode with frozen parameters; restore everything afterwards.

    Restored even on error or KeyboardInterrupt: every module's training flag, every
    parameter's `requires_grad` and `.grad`, the set of PyTorch hooks (any handle
    added during the body is removed), and tensors the backend caches on its modules
    (e.g. a bridge's last attention pattern, which would otherwise keep our autograd
    graph alive). Weights are never written by our code; the tests check them bit for bit.
    A nested block for a model that is already preserved costs nothing: the outer one restores.
    """
    if id(model) in _ACTIVE.get():
        yield
        return
    from .adapter import wire_bridge_internals

    modules = _all_modules(model)
    hooks = [_hook_keys(m) for m in modules]  # before the bridge's wiring: restored exactly
    lens_hooks = [_lens_handles(m) for m in modules]
    unwired = _unwired_blocks(model)
    wire_bridge_internals(model)
    params = list(model.parameters())
    training = [m.training for m in modules]
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    cached = [_transient_tensors(m) for m in modules]
    token = _ACTIVE.set(_ACTIVE.get() | {id(model)})
    try:
        for m in modules:
            if m.training:
                m.train(False)
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        _ACTIVE.reset(token)
        for m, flag in zip(modules, training, strict=False):
            m.training = flag
        for p, flag, grad in zip(params, requires_grad, grads, strict=False):
            p.requires_grad_(flag)
            p.grad = grad
        _restore_cached(modules, cached)
        _tear_down(unwired)  # wired by us (up front or by a forward in the body): unwire
        _restore_hooks(modules, lens_hooks, hooks)


def _restore_cached(modules: list[nn.Module], cached: list[dict[str, Tensor | None]]) -> None:
    """Put back the tensors each module cached on itself before the body (`_transient_tensors`)."""
    for m, before in zip(modules, cached, strict=False):
        for key, value in vars(m).items():
            if isinstance(value, Tensor) and key in before and before[key] is not value:
                m.__dict__[key] = before[key]


def _restore_hooks(modules: list[nn.Module], lens_hooks: list[dict[str, list]], hooks: list[tuple[frozenset, ...]]) -> None:
    """Remove every hook handle added since `_lens_handles` / `_hook_keys` were taken."""
    for m, before in zip(modules, lens_hooks, strict=False):
        for attr, handles in before.items():
            table = getattr(m, attr)
            table[:] = [h for h in table if any(h is kept for kept in handles)]
    for m, keys_before in zip(modules, hooks, strict=False):
        for attr, keys in zip(
            ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"),
            keys_before, strict=False,
        ):
            table = getattr(m, attr, None)
            if table is not None:
                for key in [k for k in table if k not in keys]:
                    del table[key]


def preserves_model(fn: F) -> F:
    """Decorate a public function whose first argument is the model with `preserved`.

    The wrapper also takes a keyword-only `strict=False`: with `strict=True` a fast path
    whose self-check fails raises `SelfCheckError` instead of falling back (the same as
    running the call inside `li.strict_checks()`). The signature shown by `help()` lists it.

    Around the call: calls on the same model from several threads run one at a time (a
    per-model lock, so each sees the model as a sequential call would); gradients are
    enabled locally, so `torch.no_grad()` and `torch.inference_mode()` in the caller do not
    break the gradient methods (the caller's modes are back on afterwards); and every
    process-wide setting (random generators, default dtype, threads, flags, warning
    filters, logger levels) is restored (`global_state.unchanged`).
    """

    @functools.wraps(fn)
    def wrapper(model, *args, strict: object = False, **kwargs):  # validated below, so any value reaches the check
        from .adapter import unwrap_model
        from .selfcheck import recording, strict_checks

        if not isinstance(strict, bool):
            from ..errors import OptionError

            raise OptionError(f"strict={strict!r} is not valid; choose True or False.")
        inner = unwrap_model(model)  # a clear UnsupportedModelError before anything touches it
        with model_lock(inner), unchanged(), torch.inference_mode(False), torch.enable_grad(), \
                strict_checks(True if strict else None), preserved(inner), recording() as checks:
            result = fn(model, *args, **kwargs)
        if dataclasses.is_dataclass(result) and not isinstance(result, type) \
                and any(f.name == "checks" for f in dataclasses.fields(result)):
            held = tuple(getattr(result, "checks", ()))
            result = dataclasses.replace(result, checks=(*held, *(c for c in checks if c not in held)))
        return result

    # A function attribute that inspect.signature reads; the wrapper keeps fn's call shape (plus
    # strict=), which mypy cannot see through functools.wraps, so it is returned as fn's type F.
    wrapper.__signature__ = _with_strict(inspect.signature(fn))  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that serialises our calls on `model` (re-entrant: a call may call another)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def _with_strict(signature: inspect.Signature) -> inspect.Signature:
    """`signature` with a keyword-only `strict: bool = False`, placed before any **kwargs."""
    params = list(signature.parameters.values())
    strict = inspect.Parameter("strict", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool)
    at = len(params) - 1 if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD else len(params)
    return signature.replace(parameters=[*params[:at], strict, *params[at:]])
