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
        """The hook names of `pairs()`, in the same order."""
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


def _attention_only(adapter: ModelAdapter) -> bool:
    """HookedTransformer's `attn_only` blocks: attention and no MLP (its MLP hooks never fire)."""
    return not adapter.is_bridge and bool(getattr(adapter.cfg, "attn_only", False))


def _refuse_missing_mlp(adapter: ModelAdapter, what: str) -> None:
    if _attention_only(adapter):
        raise UnsupportedModelError(f"{what} needs an MLP, but this model is attention-only (its blocks have no MLP).")


def _check_sequential(adapter: ModelAdapter) -> None:
    if getattr(adapter.cfg, "parallel_attn_mlp", False):
        raise UnsupportedModelError(
            "Removing a residual connection needs a sequential block (attention, then MLP); "
            "this model runs attention and MLP in parallel."
        )


def remove_residual(adapter: ModelAdapter, layer: int, around: str) -> HookPlan:
    """Turn x + f(x) into f(x) around block `layer`'s attention ("attn") or MLP ("mlp").

    f(x) is what the sub-layer adds to the residual stream, read as a difference of
    residual points (`resid_mid - resid_pre` for attention, `resid_post - resid_mid` for
    the MLP). That is the sub-layer's contribution whatever the block does to it first
    (a post-norm as in OLMo-2 or Gemma, Granite's residual multiplier), and it needs no
    hook on the sub-layer's own output, which some blocks only fire for TransformerLens's
    own hooks.
    """
    _check_sequential(adapter)
    if around == "mlp":
        _refuse_missing_mlp(adapter, "Removing the residual connection around the MLP")
    state: dict[str, Tensor] = {}
    if _attention_only(adapter):  # resid_post = resid_pre + attn_out: keep only attn_out
        read = HookPlan(readers=[(site_hook_name(Site.RESID_PRE, layer), _store(state, "pre"))])
        write = HookPlan(writers=[(site_hook_name(Site.RESID_POST, layer), lambda x, hook: x - state["pre"])])
        return read + write
    mid = site_hook_name(Site.RESID_MID, layer)
    if mid not in adapter.model.hook_dict:
        raise UnsupportedModelError(
            f"Removing a residual connection needs the residual stream between attention and MLP, but block "
            f"{layer} has no hook point {mid!r} (a state-space or fused block has no such point)."
        )
    if around == "attn":
        read = HookPlan(readers=[(site_hook_name(Site.RESID_PRE, layer), _store(state, "pre"))])
        return read + write_site(adapter, Site.RESID_MID, layer, lambda x: x - state["pre"])
    read = HookPlan(readers=[(mid, _store(state, "mid"))])
    write = HookPlan(writers=[(site_hook_name(Site.RESID_POST, layer), lambda x, hook: x - state["mid"])])
    return read + write


def zero_component(adapter: ModelAdapter, layer: int, component: str) -> HookPlan:
    """Block `layer`'s attention or MLP output set to zero."""
    if component != "attn":
        _refuse_missing_mlp(adapter, "Zeroing the MLP")
    site = Site.ATTN_OUT if component == "attn" else Site.MLP_OUT
    return write_site(adapter, site, layer, torch.zeros_like)


# ----- norms -------------------------------------------------------------------------
# The norm slots a block may have, by the kind `BypassLayerNorm` / `FreezeLayerNorm`
# name them with, and the attribute(s) TransformerLens's bridge gives them:
# - "ln1": the norm before attention (`ln1`), or before a state-space block's mixer (`norm`);
# - "ln1_post": the norm on attention's output before the residual add (`ln1_post`:
#   OLMo-2/3, FlexOlmo, Exaone-4, Gemma-2/3/4);
# - "ln2" / "ln2_post": the same two around the MLP.
# Norms inside a sub-layer (query/key norms) and model-specific extras are not block norms.
BLOCK_NORM_KINDS = ("ln1", "ln1_post", "ln2", "ln2_post")
_BRIDGE_SLOTS = {"ln1": ("ln1", "norm"), "ln1_post": ("ln1_post",), "ln2": ("ln2",), "ln2_post": ("ln2_post",)}
FINAL = "final"


@dataclass(frozen=True)
class NormSlot:
    """One normalization module of the model: its kind, block (None: the final norm) and name."""

    kind: str
    layer: int | None
    prefix: str

    def describe(self) -> str:
        """A readable name for messages: `ln_final`, or e.g. `ln1 of block 3`."""
        return "ln_final" if self.layer is None else f"{self.kind} of block {self.layer}"


def _has_points(adapter: ModelAdapter, prefix: str, points: tuple[str, ...]) -> bool:
    names = adapter.model.hook_dict
    return all(f"{prefix}.hook_{p}" in names for p in points)


def _is_identity(adapter: ModelAdapter, prefix: str) -> bool:
    """A norm slot that holds no normalization (ModernBERT-decoder's first block)."""
    module = adapter.model.get_submodule(prefix)
    return isinstance(getattr(module, "original_component", None), torch.nn.Identity)


def _slot(adapter: ModelAdapter, kind: str, layer: int | None) -> NormSlot | None:
    """The norm of this kind in block `layer` (or the final norm), or None where there is none."""
    if not adapter.is_bridge:
        if kind in ("ln2", "ln2_post") and _attention_only(adapter):
            return None  # (TransformerLens's weight folding adds an ln2 that never runs)
        norm = Norm.FINAL if kind == FINAL else Norm(kind)
        prefix = norm_hook_name(norm, layer, "scale").removesuffix(".hook_scale")
        return NormSlot(kind, layer, prefix) if _has_points(adapter, prefix, ("scale",)) else None
    attrs = ("ln_final",) if kind == FINAL else _BRIDGE_SLOTS[kind]
    for attr in attrs:
        prefix = attr if kind == FINAL else f"blocks.{layer}.{attr}"
        if _has_points(adapter, prefix, ("in", "out")) and not _is_identity(adapter, prefix):
            return NormSlot(kind, layer, prefix)
    return None


def block_norms(adapter: ModelAdapter, layer: int, kinds: tuple[str, ...] = BLOCK_NORM_KINDS) -> list[NormSlot]:
    """The norms of block `layer` among `kinds`, in block order."""
    return [slot for kind in kinds if (slot := _slot(adapter, kind, layer)) is not None]


def final_norm(adapter: ModelAdapter) -> NormSlot | None:
    """The final norm (before the unembedding), or None if the model has none."""
    return _slot(adapter, FINAL, None)


def norm_inventory(adapter: ModelAdapter) -> str:
    """The norms this model has, for error messages: e.g. "ln1_post, ln2_post in blocks 0-1; ln_final"."""
    by_kinds: dict[tuple[str, ...], list[int]] = {}
    for layer in range(adapter.n_layers):
        kinds = tuple(slot.kind for slot in block_norms(adapter, layer))
        if kinds:
            by_kinds.setdefault(kinds, []).append(layer)
    parts = []
    for kinds, layers in by_kinds.items():
        span = f"block {layers[0]}" if len(layers) == 1 else f"blocks {_ranges(layers)}"
        parts.append(f"{', '.join(kinds)} in {span}")
    if final_norm(adapter) is not None:
        parts.append("ln_final")
    return "; ".join(parts) if parts else "none that lens_inversion can find"


def _ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


@dataclass(frozen=True)
class _NormMath:
    """What a bridge norm computes: out = A(P x) / s(x) + bias, s = sqrt(mean((P x)^2) + eps).

    P centres x (LayerNorm) or not (RMSNorm); A is the norm's elementwise affine weight, in
    whatever convention the module stores it (1 + w, w, or none): nothing here needs it.
    """

    centred: bool
    eps: float
    bias: Tensor | None

    def scale(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.centred:
            x = x - x.mean(-1, keepdim=True)
        return (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def affine_part(self, out: Tensor) -> Tensor:
        """A(P x) / s: the output without its bias."""
        out = out.float()
        return out if self.bias is None else out - self.bias.float()


def _norm_math(adapter: ModelAdapter, slot: NormSlot) -> _NormMath:
    module = adapter.model.get_submodule(slot.prefix)
    original = getattr(module, "original_component", None)
    kind = type(original).__name__
    if hasattr(module, "uses_rms_norm"):
        centred = not module.uses_rms_norm
    elif isinstance(original, torch.nn.LayerNorm) or ("LayerNorm" in kind and "RMS" not in kind):
        centred = True
    elif "RMSNorm" in kind:
        centred = False
    else:
        raise UnsupportedModelError(
            f"Cannot tell whether {slot.describe()} ({kind}) is a LayerNorm or an RMSNorm, so its scale "
            "cannot be set or frozen; BypassLayerNorm(mode='identity') needs no such knowledge."
        )
    eps = next(
        (float(v) for v in (getattr(original, "eps", None), getattr(original, "variance_epsilon", None)) if isinstance(v, (int, float))),
        float(getattr(adapter.cfg, "eps", 1e-5)),
    )
    bias = getattr(original, "bias", None)
    return _NormMath(centred, eps, bias if isinstance(bias, Tensor) else None)


def _ht_normalizes_output(adapter: ModelAdapter, slot: NormSlot) -> bool:
    """HookedTransformer: whether the norm acts on a sub-layer's output, whose input no hook shows.

    That is ln1_post / ln2_post (Gemma-2), and ln1 / ln2 of post-norm blocks (OLMo-2).
    """
    if slot.kind.endswith("_post"):
        return True
    if slot.layer is None:
        return False
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # older 3.x: no post-norm blocks
        return False
    return getattr(adapter.cfg, "original_architecture", None) in POST_NORM_ARCHITECTURES


def _norm_input_site(adapter: ModelAdapter, norm: Norm, layer: int | None) -> str:
    """HookedTransformer: the residual hook whose value a pre-norm normalizes."""
    if norm is Norm.FINAL:
        return site_hook_name(Site.RESID_POST, adapter.n_layers - 1)
    if norm is Norm.LN1 or getattr(adapter.cfg, "parallel_attn_mlp", False):
        return site_hook_name(Site.RESID_PRE, layer)
    return site_hook_name(Site.RESID_MID, layer)


def _ht_norm(slot: NormSlot) -> Norm:
    return Norm.FINAL if slot.layer is None else Norm(slot.kind)


def _ht_module(adapter: ModelAdapter, slot: NormSlot):
    model = adapter.model
    return model.ln_final if slot.layer is None else getattr(model.blocks[slot.layer], slot.kind)


def bypass_norm(adapter: ModelAdapter, slot: NormSlot) -> HookPlan:
    """The norm replaced by the identity: its output equals its input."""
    state: dict[str, Tensor] = {}
    if adapter.is_bridge:
        return HookPlan(
            readers=[(f"{slot.prefix}.hook_in", _store(state, "in"))],
            writers=[(f"{slot.prefix}.hook_out", lambda x, hook: state["in"].to(x.dtype))],
        )
    norm, layer = _ht_norm(slot), slot.layer
    module = _ht_module(adapter, slot)
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

    normalized = norm_hook_name(norm, layer, "normalized")
    if _ht_normalizes_output(adapter, slot):  # no hook shows the input: rebuild it from the norm's own hooks
        if "RMS" not in type(module).__name__:
            raise UnsupportedModelError(
                f"Cannot bypass {slot.describe()}: it is a LayerNorm on a sub-layer's output, and HookedTransformer "
                "shows neither its input nor the mean it removes; FreezeLayerNorm and "
                "BypassLayerNorm(mode='unit_scale') still work."
            )

        def unscale(x, hook):  # RMSNorm: normalized = input / scale
            state["in"] = x * state.pop("scale")
            return undo_affine(x, hook)

        return HookPlan(readers=[(norm_hook_name(norm, layer, "scale"), _store(state, "scale"))],
                        writers=[(normalized, unscale)])
    return HookPlan(
        readers=[(_norm_input_site(adapter, norm, layer), _store(state, "in"))],
        writers=[(normalized, undo_affine)],
    )


def unit_scale_norm(adapter: ModelAdapter, slot: NormSlot) -> HookPlan:
    """The norm's scale set to one: centring (LayerNorm) and affine terms stay.

    On the bridge the output is rescaled, `(out - bias) * s(x) + bias`, rather than
    TransformerLens's `hook_scale` edited: that edit makes the bridge rebuild the affine
    part itself, which fails on norms without weights (OLMo, NanoChat) and does not
    exist where a norm has no `hook_scale` (Gemma-4).
    """
    if not adapter.is_bridge:
        name = norm_hook_name(_ht_norm(slot), slot.layer, "scale")
        return HookPlan(writers=[(name, lambda x, hook: torch.ones_like(x))])
    math = _norm_math(adapter, slot)
    state: dict[str, Tensor] = {}  # the norm's input, stored by the reader hook

    def rescale(out, hook):
        value = math.affine_part(out) * math.scale(state["in"])
        if math.bias is not None:
            value = value + math.bias.float()
        return value.to(out.dtype)

    return HookPlan(
        readers=[(f"{slot.prefix}.hook_in", _store(state, "in"))],
        writers=[(f"{slot.prefix}.hook_out", rescale)],
    )


def freeze_norm(adapter: ModelAdapter, slot: NormSlot) -> HookPlan:
    """The norm's scale detached: same forward values, linearised gradients.

    On the bridge: with out = A(P x)/s(x) + b, the frozen norm A(P x)/s0 + b has the
    Jacobian of the real one plus (out - b)/s0 * grad s, so the output becomes
    `out + (out - b)/s0 * (s(x) - s0)` with s0 = s(x) detached: the same values, and the
    frozen norm's gradient whatever convention its affine weight uses (or none).
    """
    if not adapter.is_bridge:
        name = norm_hook_name(_ht_norm(slot), slot.layer, "scale")
        return HookPlan(writers=[(name, lambda x, hook: x.detach())])
    math = _norm_math(adapter, slot)
    state: dict[str, Tensor] = {}  # the norm's input, stored by the reader hook

    def freeze(out, hook):
        s = math.scale(state["in"])
        s0 = s.detach()
        slope = (math.affine_part(out) / s0).detach()
        return out + (slope * (s - s0)).to(out.dtype)

    return HookPlan(
        readers=[(f"{slot.prefix}.hook_in", _store(state, "in"))],
        writers=[(f"{slot.prefix}.hook_out", freeze)],
    )
