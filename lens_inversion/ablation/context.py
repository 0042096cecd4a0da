"""`ablated(model, *specs)`: a context in which every forward sees the ablated model."""

import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from ..errors import HookNeverFiredError, ReusedContextError
from ..hooks.adapter import adapter_for, unwrap_model
from ..hooks.interventions import attached
from ..hooks.preserve import bridge_wiring_restored, model_lock
from .apply import check_specs, compile_specs
from .specs import Spec


def ablated(model, *specs: Spec) -> "_Ablated":
    """Apply ablation specs to `model` for the body of a `with` block.

    Any forward inside (plain `model(...)` calls and lens_inversion's own functions) sees
    the ablated model. The hooks are removed when the block ends, also on error. If a
    spec never took effect (no forward ran, or every forward stopped before its layer),
    HookNeverFiredError names it. Reference activations for mean/resample ablation are
    computed once, on entry, from the unablated model. While the block runs, our calls on
    the same model from other threads wait for it to end (they never see its ablation).

    Args:
        model: a TransformerBridge or HookedTransformer.
        *specs: RemoveResidual, ZeroComponent, BypassLayerNorm, FreezeLayerNorm, Ablate,
            TruncateWidth; applied in order where they touch the same activation.

    Yields:
        The model itself.

    The context is single-use: entering the same `ablated(...)` object a second time (again
    after it ended, or nested inside itself) raises ReusedContextError; write
    `with li.ablated(model, ...)` once per block.

    Examples:
        >>> with li.ablated(model, li.RemoveResidual(0, around="attn"), li.BypassLayerNorm(which="final")):
        ...     logits = model("The sky is blue.")
        >>> logits.shape[-1] == model.cfg.d_vocab
        True
    """
    check_specs(specs)  # at the call, not only on entering the block
    return _Ablated(_ablated(model, specs), specs)


class _Ablated(AbstractContextManager):
    """The context `ablated` returns: a generator context that says clearly when it is entered twice."""

    def __init__(self, context, specs: tuple) -> None:
        self._context, self._specs, self._state = context, specs, "new"

    def __enter__(self):
        if self._state != "new":
            names = ", ".join(repr(s) for s in self._specs)
            raise ReusedContextError(
                f"This li.ablated(model, {names}) context was already entered (it is {self._state}); a context "
                "is single-use: enter it once, and create a new one with li.ablated(model, *specs) for each "
                "`with` block."
            )
        self._state = "active"
        try:
            return self._context.__enter__()
        except BaseException:
            self._state = "ended"
            raise

    def __exit__(self, *exc_info):
        self._state = "ended"
        return self._context.__exit__(*exc_info)


@contextmanager
def _ablated(model, specs: tuple) -> Iterator:
    # The block spans user code without `preserved`: leave the bridge's lazily wired capture
    # hooks as they were found (Bloom never wires them itself).
    with bridge_wiring_restored(unwrap_model(model)):
        adapter = adapter_for(model)
        with model_lock(adapter.model):
            silent = yield from _ablated_body(adapter, specs)
    if silent:
        names = ", ".join(repr(s) for s in silent)
        raise HookNeverFiredError(
            f"These ablations never took effect: {names}. Run a forward pass inside the `with` block, "
            "and do not stop it (stop_at_layer) before the ablated layer."
        )


def _ablated_body(adapter, specs):
    """Attach the specs' hooks around the caller's block; return the specs that never fired."""
    pairs, owners = compile_specs(adapter, specs)
    with warnings.catch_warnings():
        # RMSNorm bridges warn on every edit of hook_scale; the edit is the point here.
        warnings.filterwarnings("ignore", message=".*hook_scale.*")
        with attached(adapter.model, pairs, require_fire=False) as counts:
            yield adapter.model
            return [spec for spec, own in zip(specs, owners, strict=True) if any(counts[i] == 0 for i in own)]
