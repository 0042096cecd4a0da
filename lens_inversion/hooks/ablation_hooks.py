"""Backend-specific translation of ablations into (hook name, fn) pairs.

Every function returns a `HookPlan`: `fixes` restore true residual-stream semantics on
TransformerBridge (run first at their hook point), `writers` replace activations, and
`readers` capture values that later hooks need (run last, so they see what the model
really used). `HookPlan.pairs()` orders them that way for `attached`.

The traps handled here (see tl4_notes.md §0.1, §4):
- On the bridge `blocks.L.hook_resid_mid` is the MLP norm's input only; the residual
  addition keeps the old value. A write there is carried to `hook_resid_post` as a
  correction `+ (new - old)`. HookedTransformer propagates the write itself.
- The bridge's norms have `hook_in`/`hook_out`; HookedTransformer's have only
  `hook_scale` and `hook_normalized` (before the affine terms), so the norm's input is
  read at the residual hook that feeds it and the affine terms are undone.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import UnsupportedModelError
from .adapter import ModelAdapter
from .interventions import HookFn
from .sites import Norm, Site, norm_hook_name, site_hook_name

HookPair = tuple[str, HookFn]
Rewrite = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class HookPlan:
    """Hooks of one intervention, split into fixes, writers and readers."""

    writers: list[HookPair] = field(default_factory=list)
    readers: list[HookPair] = field(default_factory=list)
    fixes: list[HookPair] = field(default_factory=list)

    def __add__(self, other: "HookPlan") -> "HookPlan":
        return HookPlan(self.writers + other.writers, self.readers + other.readers, self.fixes + other.fixes)

    def pairs(self) -> list[HookPair]:
        """All hooks, fixes first, then writers, then readers."""
        return self.fixes + self.writers + self.readers

    def names(self) -> list[str]:
        return [name for name, _ in self.pairs()]


def _store(state: dict, key: str) -> HookFn:
    def save(x, hook):
        state[key] = x

    return save


def write_site(adapter: ModelAdapter, site: Site, layer: int | None, rewrite: Rewrite) -> HookPlan:
    """Replace the activation at (site, layer) by `rewrite(x)`, so that the write propagates.

    `rewrite` may change the batch size (a [1, pos, d] activation may become [B, pos, d]);
    everything downstream then runs on B rows.
    """
    name = site_hook_name(site, layer)
    if site is not Site.RESID_MID or not adapter.is_bridge:
        return HookPlan(writers=[(name, lambda x, hook: rewrite(x))])
    state: dict[str, Tensor] = {}

    def write_mid(x, hook):
        new = rewrite(x)
        state["delta"] = new - x
        return new

    def carry(x, hook):
        return x + state.pop("delta")

    return HookPlan(writers=[(name, write_mid)], fixes=[(site_hook_name(Site.RESID_POST, layer), carry)])


def _check_sequential(adapter: ModelAdapter) -> None:
    if getattr(adapter.cfg, "parallel_attn_mlp", False):
        raise UnsupportedModelError(
            "Removing a residual connection needs a sequential block (attention, then MLP); "
            "this model runs attention and MLP in parallel."
        )


def remove_residual(adapter: ModelAdapter, layer: int, around: str) -> HookPlan:
    """Turn x + f(x) into f(x) around block `layer`'s attention ("attn") or MLP ("mlp")."""
    _check_sequential(adapter)
    state: dict[str, Tensor] = {}
    if around == "attn":
        read = HookPlan(readers=[(site_hook_name(Site.RESID_PRE, layer), _store(state, "pre"))])
        return read + write_site(adapter, Site.RESID_MID, layer, lambda x: x - state["pre"])
    read = HookPlan(readers=[(site_hook_name(Site.MLP_OUT, layer), _store(state, "mlp"))])
    write = HookPlan(
        writers=[(site_hook_name(Site.RESID_POST, layer), lambda x, hook: state["mlp"].expand_as(x).clone())]
    )
    return read + write


def zero_component(adapter: ModelAdapter, layer: int, component: str) -> HookPlan:
    """Block `layer`'s attention or MLP output set to zero."""
    site = Site.ATTN_OUT if component == "attn" else Site.MLP_OUT
    return write_site(adapter, site, layer, torch.zeros_like)


def _norm_module(adapter: ModelAdapter, norm: Norm, layer: int | None):
    model = adapter.model
    return model.ln_final if norm is Norm.FINAL else getattr(model.blocks[layer], norm.value)


def _norm_input_site(adapter: ModelAdapter, norm: Norm, layer: int | None) -> str:
    """HookedTransformer: the residual hook whose value the norm normalizes."""
    if norm is Norm.FINAL:
        return site_hook_name(Site.RESID_POST, adapter.n_layers - 1)
    if norm is Norm.LN1 or getattr(adapter.cfg, "parallel_attn_mlp", False):
        return site_hook_name(Site.RESID_PRE, layer)
    return site_hook_name(Site.RESID_MID, layer)


def has_norm(adapter: ModelAdapter, norm: Norm, layer: int | None) -> bool:
    """Whether the model has this norm (some models have no final or per-block norm)."""
    return norm_hook_name(norm, layer, "scale") in adapter.model.hook_dict


def bypass_norm(adapter: ModelAdapter, norm: Norm, layer: int | None) -> HookPlan:
    """The norm replaced by the identity: its output equals its input."""
    state: dict[str, Tensor] = {}
    if adapter.is_bridge:
        return HookPlan(
            readers=[(norm_hook_name(norm, layer, "in"), _store(state, "in"))],
            writers=[(norm_hook_name(norm, layer, "out"), lambda x, hook: state["in"].to(x.dtype))],
        )
    module = _norm_module(adapter, norm, layer)
    weight, bias = getattr(module, "w", None), getattr(module, "b", None)
    if weight is not None and bool((weight == 0).any()):
        raise UnsupportedModelError(
            f"Cannot bypass {norm.value} (layer {layer}): its weight has zeros, so the affine map cannot be undone."
        )

    def undo_affine(x, hook):
        value = state["in"]
        if bias is not None:
            value = value - bias
        if weight is not None:
            value = value / weight
        return value.to(x.dtype)

    return HookPlan(
        readers=[(_norm_input_site(adapter, norm, layer), _store(state, "in"))],
        writers=[(norm_hook_name(norm, layer, "normalized"), undo_affine)],
    )


def unit_scale_norm(adapter: ModelAdapter, norm: Norm, layer: int | None) -> HookPlan:
    """The norm's scale set to one: centring (LayerNorm) and affine terms stay."""
    return HookPlan(writers=[(norm_hook_name(norm, layer, "scale"), lambda x, hook: torch.ones_like(x))])


def freeze_norm(adapter: ModelAdapter, norm: Norm, layer: int | None) -> HookPlan:
    """The norm's scale detached: same forward values, linearised gradients."""
    return HookPlan(writers=[(norm_hook_name(norm, layer, "scale"), lambda x, hook: x.detach())])
