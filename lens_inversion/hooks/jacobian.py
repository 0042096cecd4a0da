"""TransformerLens's Jacobian lens (4.3+), behind our adapter: fit, load and transport.

We do not re-implement it: fitting, the artifact format and the transport J_l h are
TransformerLens's. This module only finds the class, turns its ValueErrors into our typed
errors and maps its layer convention (J_l acts on the output of block l) onto our rows.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor

from ..errors import OptionError, UnsupportedModelError
from .adapter import ModelAdapter
from .fingerprint import fingerprints_match, unembed_fingerprint, unembed_hash
from .sites import Site


def jacobian_lens_class():
    """TransformerLens's JacobianLens class; UnsupportedModelError where the installed version lacks it."""
    try:
        from transformer_lens.tools.analysis import JacobianLens
    except ImportError as error:
        from importlib.metadata import version

        raise UnsupportedModelError(
            f"The Jacobian lens needs TransformerLens 4.3 or newer (transformer_lens.tools.analysis."
            f"JacobianLens); this install has transformer-lens {version('transformer-lens')}. "
            "The logit lens and li.TunedLens work on every version."
        ) from error
    return JacobianLens


def is_jacobian_lens(lens) -> bool:
    """Whether `lens` is a TransformerLens JacobianLens (False where TransformerLens has none)."""
    try:
        cls = jacobian_lens_class()
    except UnsupportedModelError:
        return False
    return isinstance(lens, cls)


def _checked(adapter: ModelAdapter, lens) -> None:
    """Run TransformerLens's own model check; its refusals become UnsupportedModelError."""
    if not adapter.is_bridge:
        raise UnsupportedModelError(
            "The Jacobian lens supports TransformerBridge models only (TransformerLens 4); "
            "this is a HookedTransformer."
        )
    try:
        lens.validate_model(adapter.model)
    except (TypeError, ValueError) as error:
        raise UnsupportedModelError(f"TransformerLens's Jacobian lens refuses this model: {error}") from error
    _check_fingerprint(adapter, lens.metadata)


def _check_fingerprint(adapter: ModelAdapter, metadata: dict) -> None:
    """Refuse another model: by the unembedding fingerprint when recorded, else by tuned-lens's hash."""
    fingerprint = metadata.get("fingerprint")
    if fingerprint is not None:
        if not fingerprints_match(fingerprint, unembed_fingerprint(adapter)):
            raise UnsupportedModelError(
                "This Jacobian lens was fitted for another model: its recorded unembedding fingerprint differs "
                "from this model's (other weights, or compatibility mode's folded and centred ones)."
            )
        return
    recorded = metadata.get("unembed_hash")
    if recorded is not None and recorded != unembed_hash(adapter):
        raise UnsupportedModelError(
            "This Jacobian lens was fitted for another model: its recorded unembedding fingerprint "
            f"({recorded[:12]}…) differs from this model's ({unembed_hash(adapter)[:12]}…)."
        )


def jacobian_translator(adapter: ModelAdapter, lens) -> Callable[[Tensor, Site, int], "Tensor | None"]:
    """Translator of a fitted lens: J_l h on block l's output, None on rows it was not fitted for."""
    _checked(adapter, lens)
    fitted = set(lens.source_layers)

    def translate(resid: Tensor, site: Site, layer: int) -> Tensor | None:
        if site is not Site.RESID_POST or layer not in fitted:
            return None
        return lens.transport(resid, layer).to(resid.dtype)

    return translate


def fit_jacobian_lens(adapter: ModelAdapter, prompts: Sequence[str], *, corpus: str, max_seq_len: int,
                      dim_batch: int, progress: bool):
    """Fit a JacobianLens with TransformerLens's estimator on a raw bridge, recording the model's fingerprints."""
    cls = jacobian_lens_class()
    if not adapter.is_bridge:
        raise UnsupportedModelError("The Jacobian lens supports TransformerBridge models only (TransformerLens 4).")
    try:
        return cls.fit(adapter.model, list(prompts), corpus=corpus, max_seq_len=max_seq_len, dim_batch=dim_batch,
                       show_progress=progress,
                       metadata={"unembed_hash": unembed_hash(adapter), "fingerprint": unembed_fingerprint(adapter)})
    except TypeError as error:
        raise UnsupportedModelError(f"TransformerLens's Jacobian lens refuses this model: {error}") from error
    except ValueError as error:  # compatibility mode, too-short prompts, bad layers
        raise UnsupportedModelError(f"TransformerLens could not fit the Jacobian lens here: {error}") from error


def load_jacobian_lens(path: Path):
    """A JacobianLens from an artifact file (the reference format TransformerLens reads)."""
    cls = jacobian_lens_class()
    try:
        return cls.load(str(path))
    except (ValueError, KeyError) as error:
        raise OptionError(f"{path} is not a Jacobian lens artifact: {error}") from error


__all__ = ["fit_jacobian_lens", "is_jacobian_lens", "jacobian_lens_class", "jacobian_translator", "load_jacobian_lens"]
