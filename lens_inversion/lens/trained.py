"""Trained lenses on disk: the ones shipped for the embedded models, and Jacobian-lens fitting.

`li.load_lens("tiny", kind="tuned")` reads the tuned lens shipped with the embedded model;
a path reads a lens someone trained (a tuned-lens artifact directory, or a Jacobian-lens
`.pt` artifact). `li.fit_jacobian_lens` fits one with TransformerLens's own estimator.
"""

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from ..deprecation import renamed_options
from ..errors import LensInversionError, ModelNotFoundError, OptionError
from ..hooks.adapter import adapter_for
from ..hooks.jacobian import fit_jacobian_lens as _fit_jacobian
from ..hooks.jacobian import load_jacobian_lens
from ..models.loader import ASSETS, EMBEDDED
from ..validation import check_bool, check_choice, check_int, check_text

LensKind = Literal["tuned", "jacobian"]
KINDS: tuple[LensKind, ...] = ("tuned", "jacobian")


def shipped_lens_path(name: str, kind: str) -> Path:
    """Where the lens of `kind` shipped for the embedded model `name` lives."""
    return ASSETS / name / "lenses" / ("tuned" if kind == "tuned" else "jacobian.pt")


def load_lens(name_or_path: "str | os.PathLike", /, *, kind: LensKind = "tuned", model=None):
    """A trained lens: shipped for an embedded model ("tiny", "tiny-llama"), or read from a path.

    Args:
        name_or_path: an embedded model's name, a tuned-lens artifact directory
            (`config.json` + `params.pt`, as the tuned-lens package writes them), or a
            Jacobian-lens `.pt` artifact (TransformerLens / the reference format).
        kind: "tuned" (a li.TunedLens) or "jacobian" (TransformerLens's JacobianLens, 4.3+).
        model: when given, the lens is checked against it now (width, depth, fingerprint).

    Returns:
        A lens to pass as `lens=` to `li.logit_lens`, `li.token_trajectory` or `li.report`.
    """
    check_choice("kind", kind, KINDS)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise OptionError(f"name_or_path must be an embedded model's name or a path; got {type(name_or_path).__name__}.")
    name = os.fspath(name_or_path)
    path = shipped_lens_path(name, kind) if name in EMBEDDED else Path(name).expanduser()
    if not path.exists():
        shipped = ", ".join(f"{n!r}" for n in EMBEDDED if shipped_lens_path(n, kind).exists())
        raise ModelNotFoundError(
            f"No {kind} lens at {name!r}: give an embedded model with a shipped {kind} lens ({shipped or 'none'}) "
            f"or the path of a {'tuned-lens artifact directory' if kind == 'tuned' else 'Jacobian-lens .pt file'}."
        )
    if kind == "tuned":
        from .tuned import TunedLens

        return TunedLens.load(path, model=model)
    lens = load_jacobian_lens(path)
    if model is not None:
        from .translators import resolve_lens

        resolve_lens(adapter_for(model), lens)  # raises if the lens does not fit the model
    return lens


def shipped_lenses(model) -> list:
    """The trained lenses shipped for `model` when it is an embedded model (its fingerprint matches), else [].

    Lenses this install cannot read (a Jacobian lens without TransformerLens 4.3, or on a
    compatibility-mode model) are left out.
    """
    from ..hooks.fingerprint import unembed_hash
    from .translators import resolve_lens

    adapter = adapter_for(model)
    fingerprint = unembed_hash(adapter)
    found = []
    for name in EMBEDDED:
        for kind in KINDS:
            if not shipped_lens_path(name, kind).exists():
                continue
            try:
                lens = load_lens(name, kind=kind)
                if _recorded_hash(lens) != fingerprint:
                    continue
                resolve_lens(adapter, lens)
            except LensInversionError:
                continue
            found.append(lens)
    return found


def _recorded_hash(lens) -> "str | None":
    metadata = getattr(lens, "metadata", None) or {}
    return metadata.get("unembed_hash")


@renamed_options(corpus="corpus_name")  # `corpus` means the texts themselves everywhere else
def fit_jacobian_lens(model, prompts: Iterable[str], /, *, max_seq_len: int = 128, dim_batch: int = 8,
                      corpus_name: str = "user prompts", progress: bool = True):
    """Fit a Jacobian lens (Gurnee et al. 2026) with TransformerLens's estimator.

    J_l = E[∂h_final/∂h_l] per block output l, averaged over the prompts' positions (the
    first 16 and the last are skipped, as in the reference). Needs TransformerLens 4.3+ and
    a raw (not compatibility-mode) TransformerBridge. The lens records this model's
    unembedding fingerprint, so it refuses to read another model.

    Args:
        model: a raw TransformerBridge.
        prompts: texts of more than 17 tokens each (about 100 of 128 tokens suffice).
        max_seq_len: prompts are truncated to this many tokens.
        dim_batch: output dimensions per backward pass (faster, more memory).
        corpus_name: a name for the prompts, recorded in the lens's provenance.
        progress: show a progress bar.
    """
    check_int("max_seq_len", max_seq_len, low=18)
    check_int("dim_batch", dim_batch, low=1)
    check_text("corpus_name", corpus_name)
    check_bool("progress", progress)
    if isinstance(prompts, str):
        raise OptionError("prompts must be a list of texts, not one string.")
    texts = list(prompts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise OptionError(f"prompts must be a non-empty list of strings; got {len(texts)} items.")
    return _fit_jacobian(adapter_for(model), texts, corpus=corpus_name, max_seq_len=max_seq_len,
                         dim_batch=dim_batch, progress=progress)


__all__ = ["fit_jacobian_lens", "load_lens", "shipped_lens_path", "shipped_lenses"]
