"""Which lens decodes a row: the identity (logit lens), a trained translator, or a callable.

A lens maps one row's residual stream (the embedding, a block's output, or with
`rows="sublayers"` a block's resid_mid) into the basis of the final residual stream; the
model's own final norm, readout head and unembedding then decode it. The model's output row
is never translated: it is the model's logits.

- `"logit"`: the identity, nostalgebraist's logit lens.
- `li.TunedLens`: Belrose et al.'s per-layer affine translators h + A h + b.
- a TransformerLens `JacobianLens` (4.3+): J_l h for each block output it was fitted on,
  applied through its own `transport`.
- any callable `fn(resid, hook_name) -> resid`, called with the TransformerLens hook name
  of the row ("hook_embed"-free: the embedding row is `blocks.0.hook_resid_pre`).

Rows a trained lens has no translator for (a Jacobian lens has none for the embedding) are
decoded with the identity and recorded as `"logit"` in the result's `row_lenses`.
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..errors import OptionError
from ..hooks.adapter import ModelAdapter
from ..hooks.jacobian import is_jacobian_lens, jacobian_translator
from ..hooks.sites import Site, site_hook_name

LENS_KINDS = ("logit", "tuned", "jacobian", "custom")
Translate = Callable[[Tensor, Site, int], "Tensor | None"]


@dataclass(frozen=True)
class Readout:
    """A resolved lens: its kind and a translator that returns None for rows it does not cover."""

    kind: str  # one of LENS_KINDS
    translate: Translate

    def apply(self, resid: Tensor, site: Site, layer: int) -> tuple[Tensor, str]:
        """(translated resid, the kind that decoded this row: this lens's, or "logit")."""
        if self.kind == "logit":
            return resid, "logit"
        out = self.translate(resid, site, layer)
        return (resid, "logit") if out is None else (out, self.kind)


def _identity(resid: Tensor, site: Site, layer: int) -> None:
    return None


def resolve_lens(adapter: ModelAdapter, lens) -> Readout:
    """The Readout for `lens`, checked against the model; OptionError names the valid choices."""
    if isinstance(lens, str):
        if lens != "logit":
            raise OptionError(
                f"lens={lens!r} is not a lens; give 'logit', a li.TunedLens (li.load_lens(...)), "
                "a TransformerLens JacobianLens, or a callable fn(resid, hook_name) -> resid."
            )
        return Readout("logit", _identity)
    if _is_tuned_lens(lens):
        lens.check_model(adapter)
        return Readout("tuned", lens.translator_for)
    if is_jacobian_lens(lens):
        return Readout("jacobian", jacobian_translator(adapter, lens))
    if callable(lens) and not isinstance(lens, type):
        return Readout("custom", _custom(lens))
    raise OptionError(
        f"lens must be 'logit', a li.TunedLens, a TransformerLens JacobianLens or a callable "
        f"fn(resid, hook_name) -> resid; got {type(lens).__name__}."
    )


def _is_tuned_lens(lens) -> bool:
    """isinstance(lens, TunedLens) without importing the training code when no lens was ever made."""
    tuned = sys.modules.get(f"{__package__}.tuned")
    return tuned is not None and isinstance(lens, tuned.TunedLens)


def _custom(fn) -> Translate:
    def translate(resid: Tensor, site: Site, layer: int) -> Tensor:
        name = site_hook_name(site, layer)
        out = fn(resid, name)
        if not isinstance(out, Tensor) or tuple(out.shape) != tuple(resid.shape):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise OptionError(
                f"The lens callable must return a tensor of the residual's shape {tuple(resid.shape)} "
                f"for {name!r}; it returned {got}."
            )
        return out

    return translate


__all__ = ["LENS_KINDS", "Readout", "resolve_lens"]
