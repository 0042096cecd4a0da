"""Read residual streams from a user's precomputed TransformerLens ActivationCache."""

from collections.abc import Mapping

from torch import Tensor

from ..errors import OptionError
from .sites import Site, site_hook_name

# The bridge caches under canonical names when the user filtered by them.
_CANONICAL = {
    Site.RESID_PRE: "blocks.{layer}.hook_in",
    Site.RESID_MID: "blocks.{layer}.ln2.hook_in",
    Site.RESID_POST: "blocks.{layer}.hook_out",
}


def _entries(cache) -> Mapping[str, Tensor]:
    if hasattr(cache, "cache_dict"):
        return cache.cache_dict
    if isinstance(cache, Mapping):
        return cache
    raise OptionError(
        f"cache must be a TransformerLens ActivationCache or a dict of hook name -> tensor; got {type(cache).__name__}."
    )


def cached_activation(cache, site: Site, layer: int) -> Tensor:
    """The activation of `site` at `layer` in `cache`, found under its HT or canonical name.

    Raises:
        OptionError: the cache holds neither name; the message lists what it does hold.
    """
    entries = _entries(cache)
    names = [site_hook_name(site, layer)]
    if site in _CANONICAL:
        names.append(_CANONICAL[site].format(layer=layer))
    for name in names:
        if name in entries:
            act = entries[name]
            return act if act.ndim == 3 else act[None]
    held = ", ".join(sorted(entries)[:12]) + (" ..." if len(entries) > 12 else "")
    raise OptionError(
        f"The cache has no {' or '.join(names)}; cache the residual streams, e.g. "
        f"names_filter=lambda n: 'hook_resid' in n. It holds: {held or 'nothing'}."
    )


__all__ = ["cached_activation"]
