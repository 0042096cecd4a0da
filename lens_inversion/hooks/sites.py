"""Typed names for activation sites, and the only place hook-name strings are spelled."""

from enum import Enum

from ..errors import TargetError


class Site(str, Enum):
    """An activation site of a transformer; block sites need a layer, the rest do not."""

    EMBED = "embed"  # token embedding (W_E[t] times the model's embedding scale)
    RESID_PRE = "resid_pre"
    RESID_MID = "resid_mid"
    RESID_POST = "resid_post"
    ATTN_OUT = "attn_out"
    MLP_OUT = "mlp_out"
    LOGITS = "logits"  # the model's output logits

    @property
    def per_block(self) -> bool:
        """Whether this site exists once per transformer block."""
        return self not in (Site.EMBED, Site.LOGITS)

    @classmethod
    def parse(cls, value: "str | Site") -> "Site":
        """Accept a Site or its name (`"resid_post"`, `"hook_resid_post"`)."""
        if isinstance(value, Site):
            return value
        name = str(value).removeprefix("hook_")
        try:
            return cls(name)
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            raise TargetError(f"Unknown site {value!r}; valid sites: {valid}.") from None


class Norm(str, Enum):
    """A normalization module: those of a block (before and after each sub-layer) and the final one."""

    LN1 = "ln1"
    LN2 = "ln2"
    LN1_POST = "ln1_post"
    LN2_POST = "ln2_post"
    FINAL = "ln_final"


def site_hook_name(site: Site, layer: int | None) -> str:
    """The TransformerLens hook name of a site (the same on HookedTransformer and bridge)."""
    if site is Site.EMBED:
        return "hook_embed"
    if site is Site.LOGITS:
        raise TargetError("The logits are the model's output, not a hook point.")
    return f"blocks.{layer}.hook_{site.value}"


def norm_hook_name(norm: Norm, layer: int | None, point: str) -> str:
    """Hook name of a norm's `in`, `out`/`normalized` or `scale` point."""
    prefix = "ln_final" if norm is Norm.FINAL else f"blocks.{layer}.{norm.value}"
    return f"{prefix}.hook_{point}"


def block_output_hook_name(layer: int) -> str:
    """Hook on a block's residual output."""
    return site_hook_name(Site.RESID_POST, layer)
