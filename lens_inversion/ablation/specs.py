"""Frozen ablation specs: what to remove or replace, independent of any backend."""

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from ..errors import OptionError, TargetError
from ..hooks.sites import Site
from ..hooks.targets import Target, as_target
from ..validation import check_choice, check_int, check_seed

Component = Literal["attn", "mlp"]
WhichNorm = Literal["ln1", "ln2", "ln1_post", "ln2_post", "final", "all"]
AblateMode = Literal["zero", "mean", "resample"]
NORM_CHOICES = ("ln1", "ln2", "ln1_post", "ln2_post", "final", "all")
WRITABLE_SITES = (Site.EMBED, Site.RESID_PRE, Site.RESID_MID, Site.RESID_POST, Site.ATTN_OUT, Site.MLP_OUT)


def _check_layer(layer, what: str, *, optional: bool = False) -> None:
    if layer is None and optional:
        return
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise OptionError(f"{what} needs an integer layer (negative counts from the end); got {layer!r}.")


@dataclass(frozen=True, kw_only=False)
class RemoveResidual:
    """Remove the skip connection around a block's attention or MLP: x + f(x) becomes f(x).

    Examples:
        >>> RemoveResidual(0, around="attn")
        RemoveResidual(layer=0, around='attn')
    """

    layer: int
    around: Component = "attn"

    def __post_init__(self) -> None:
        _check_layer(self.layer, "RemoveResidual")
        check_choice("around", self.around, ("attn", "mlp"))


@dataclass(frozen=True, kw_only=False)
class ZeroComponent:
    """Set a block's attention or MLP output to zero (the branch goes, the skip stays)."""

    layer: int
    component: Component = "attn"

    def __post_init__(self) -> None:
        _check_layer(self.layer, "ZeroComponent")
        check_choice("component", self.component, ("attn", "mlp"))


@dataclass(frozen=True, kw_only=False)
class BypassLayerNorm:
    """Replace layer norms by the identity (`mode="identity"`) or divide by one (`"unit_scale"`).

    `layer=None` means every block; `which` picks a kind of norm: `ln1` (before attention,
    or before a state-space block's mixer), `ln2` (before the MLP), `ln1_post` / `ln2_post`
    (on attention's / the MLP's output before the residual add, as in OLMo-2 and Gemma),
    the `final` norm, or `all`: every norm the model has (with `layer=None` the final norm
    too; with a layer, that block's norms). Blocks without a norm of the kind are left
    alone; the spec is refused only when the model has none of it. "unit_scale" keeps
    LayerNorm's centring and the affine weights (a norm without weights has the identity
    as its affine part).
    """

    layer: int | None = None
    which: WhichNorm = "all"
    mode: Literal["identity", "unit_scale"] = "identity"

    def __post_init__(self) -> None:
        _check_layer(self.layer, "BypassLayerNorm", optional=True)
        check_choice("which", self.which, NORM_CHOICES)
        check_choice("mode", self.mode, ("identity", "unit_scale"))
        if self.which == "final" and self.layer is not None:
            raise OptionError(
                f"The final norm belongs to no block; use layer=None with which='final' (got layer={self.layer})."
            )


@dataclass(frozen=True, kw_only=False)
class FreezeLayerNorm:
    """Detach the norms' scale: forward values unchanged, gradients linearised through them.

    Same `layer` / `which` conventions as BypassLayerNorm.
    """

    layer: int | None = None
    which: WhichNorm = "all"

    def __post_init__(self) -> None:
        _check_layer(self.layer, "FreezeLayerNorm", optional=True)
        check_choice("which", self.which, NORM_CHOICES)
        if self.which == "final" and self.layer is not None:
            raise OptionError(
                f"The final norm belongs to no block; use layer=None with which='final' (got layer={self.layer})."
            )


def _writable_target(value, what: str) -> Target:
    target = as_target(value)
    if target.site not in WRITABLE_SITES:
        valid = ", ".join(s.value for s in WRITABLE_SITES)
        raise TargetError(f"{what} cannot write to {target}; writable sites: {valid}.")
    return target


def _check_reference(reference) -> None:
    texts = isinstance(reference, (list, tuple)) and all(isinstance(r, str) for r in reference)
    if reference is None or isinstance(reference, (str, Tensor)) or texts:
        return
    raise OptionError(
        f"Ablate reference must be None, a prompt string, a list of prompt strings or a tensor (token ids or "
        f"activations); got {type(reference).__name__} {reference!r}."[:300]
    )


@dataclass(frozen=True, kw_only=False, eq=False)
class Ablate:
    """Replace a target's tokens and features by zero, a mean, or a resampled activation.

    Args:
        target: a Target or its string, e.g. `"blocks.1.hook_resid_post[:, 3, :]"`.
        mode: "zero", "mean" (mean of `reference` over its rows and real positions) or
            "resample" (the reference's activation at the same position, from a row drawn
            with `seed`).
        reference: prompt(s) (string, list of strings, token ids) whose activations at the
            target's site are used, or a float tensor of activations: [d_model] or
            [..., d_model] (averaged) for "mean", [batch, pos, d_model] for "resample".
        seed: seed of the row draw for "resample".
    """

    target: "Target | str"
    mode: AblateMode = "zero"
    reference: "str | list[str] | Tensor | None" = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _writable_target(self.target, "Ablate"))
        check_choice("mode", self.mode, ("zero", "mean", "resample"))
        check_seed(self.seed, allow_none=False)
        _check_reference(self.reference)
        if self.mode != "zero" and self.reference is None:
            raise OptionError(
                f"Ablate(mode={self.mode!r}) needs reference= (prompt(s) or a float tensor of activations)."
            )

    def __repr__(self) -> str:
        ref = "" if self.reference is None else f", reference={type(self.reference).__name__}"
        return f"Ablate({str(self.target)!r}, mode={self.mode!r}{ref})"


@dataclass(frozen=True, kw_only=False)
class TruncateWidth:
    """Zero every feature from index `keep` on (the bandwidth experiment).

    `target_or_site` is a Target (that layer and its token slice; its feature slice must be
    full) or a site name such as `"resid_post"` (every layer, every token).
    """

    target_or_site: "Target | Site | str"
    keep: int

    def __post_init__(self) -> None:
        value = self.target_or_site
        if isinstance(value, Site) or (isinstance(value, str) and "." not in value and "[" not in value):
            site = Site.parse(value)
            if not site.per_block and site is not Site.EMBED:
                raise TargetError(f"TruncateWidth cannot write to {site.value!r}.")
            object.__setattr__(self, "target_or_site", site)
        else:
            target = _writable_target(value, "TruncateWidth")
            if target.features != slice(None):
                raise TargetError(f"TruncateWidth sets the width with keep=; give {target} without a feature slice.")
            object.__setattr__(self, "target_or_site", target)
        check_int("keep", self.keep, low=0)

    def __repr__(self) -> str:
        value = self.target_or_site
        shown = value.value if isinstance(value, Site) else str(value)
        return f"TruncateWidth({shown!r}, keep={self.keep})"


Spec = RemoveResidual | ZeroComponent | BypassLayerNorm | FreezeLayerNorm | Ablate | TruncateWidth
SPEC_TYPES = (RemoveResidual, ZeroComponent, BypassLayerNorm, FreezeLayerNorm, Ablate, TruncateWidth)
