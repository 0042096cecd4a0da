"""Key/value-cache backends: the only code that calls a model with cache arguments.

One interface, three implementations:

- `HFCache`: an HF-booted TransformerBridge, reusing a transformers `DynamicCache`. The
  cache goes in under the argument name the installed transformers uses (`cache` from
  5.24, `past_key_values` before). TransformerLens 4.3's attention bridges read only
  `past_key_values` (or `layer_past`) from their keyword arguments, so while we run, a
  pre-hook on each attention module hands them the new name's cache under the old name.
- `HookedCache`: HookedTransformer's frozen key/value cache.
- `Recompute`: no cache; callers run the full sequence (the reference path).

Whether a backend really reproduces the full run is not assumed: `execution` checks it
once per model (`selfcheck`) and falls back to `Recompute` when it does not. A bridge whose
attention never writes the cache it is handed gets `Recompute` from the start, with the reason.
"""

import abc
import copy
import inspect
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

_OLD_NAMES = ("past_key_values", "layer_past")


def _ones(batch: int, width: int, device) -> Tensor:
    return torch.ones(batch, width, dtype=torch.long, device=device)


class Recompute:
    """The reference: no cache, the caller runs the whole sequence."""

    name = "recompute"
    has_cache = False
    can_layer = False

    def __init__(self, reason: str = "") -> None:
        """A backend that never reuses a cache; `reason` says why (empty when recompute was asked for)."""
        self.reason = reason


class CachedBackend(abc.ABC):
    """Builds, cuts and re-batches a prefix cache, and runs new positions after it."""

    name: str
    has_cache = True
    can_layer = False  # whether rows may differ per layer (layered sweep runs)

    @abc.abstractmethod
    def build(self, model: nn.Module, tokens: Tensor):
        """Run `tokens` [rows, p] once and return the cache holding their keys/values."""

    @abc.abstractmethod
    def length(self, cache) -> int:
        """Positions the cache holds."""

    @abc.abstractmethod
    def cut(self, cache, length: int):
        """A new cache holding only the first `length` positions (the stored one is untouched)."""

    @abc.abstractmethod
    def expanded(self, cache, batch: int, *, from_layer: int = 0):
        """A per-call copy whose layers from `from_layer` on hold `batch` rows."""

    @abc.abstractmethod
    def forward(self, model: nn.Module, tokens: Tensor, cache, *, prefix_len: int, stop: int | None) -> Tensor:
        """Run `tokens` [batch, n] after the cached prefix (the copy may be extended)."""


CacheBackend = CachedBackend | Recompute


class HFCache(CachedBackend):
    """transformers' DynamicCache behind a TransformerBridge."""

    name = "hf"

    def __init__(self, model: nn.Module) -> None:
        """Reuse key/value caches through Hugging Face's own cache class for `model`."""
        from transformers import DynamicCache

        self._cache_class = DynamicCache
        original = model.original_model
        assert isinstance(original, nn.Module)  # narrowing: an HF-booted bridge's transformers model (see backend_for)
        forward = original.forward
        self.argument = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
        self.can_layer = True

    @contextmanager
    def _old_name_shim(self, model: nn.Module) -> Iterator[None]:
        """Attention modules that read the cache under its old name get it under both names."""
        if self.argument == "past_key_values":
            yield
            return

        def rename(module, args, kwargs):
            cache = kwargs.get("cache")
            if cache is None or any(kwargs.get(name) is not None for name in _OLD_NAMES):
                return None
            return args, {**kwargs, "past_key_values": cache}

        handles = [
            block.attn.register_forward_pre_hook(rename, with_kwargs=True)
            for block in getattr(model, "blocks", [])
            if hasattr(block, "attn")
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _call(self, model, tokens, cache, *, width: int, stop: int | None):
        mask = _ones(tokens.shape[0], width, tokens.device)
        kwargs = {self.argument: cache, "attention_mask": mask}
        if stop is not None:
            kwargs["stop_at_layer"] = stop
        with self._old_name_shim(model), warnings.catch_warnings():
            # Attention modules that pass every keyword on (OPT, BERT) see both names, on purpose.
            warnings.filterwarnings("ignore", message=r"Both `past_key_values` and `cache` are set", category=FutureWarning)
            return model(tokens, **kwargs)

    def _empty(self, model):
        """A cache laid out for this model's layers (sliding-window, indexed...), from its config."""
        try:
            return self._cache_class(config=model.original_model.config)
        except Exception:  # a config the layout helper does not know: plain key/value layers
            return self._cache_class()

    def build(self, model, tokens):
        """Run the prefix `tokens` into a fresh DynamicCache and return it."""
        cache = self._empty(model)
        self._call(model, tokens, cache, width=tokens.shape[1], stop=None)
        return cache

    def length(self, cache) -> int:
        """Positions held, from the cache's own sequence length."""
        return int(cache.get_seq_length())

    def cut(self, cache, length: int):
        """A deep copy cropped to the first `length` positions."""
        fresh = copy.deepcopy(cache)
        extra = self.length(fresh) - length
        if extra > 0:
            fresh.crop(-extra)  # a negative count removes that many positions (transformers 4 and 5)
        return fresh

    def expanded(self, cache, batch: int, *, from_layer: int = 0):
        """A deep copy with each row repeated `batch` times in the layers from `from_layer` on (as is if it has `batch` rows)."""
        fresh = copy.deepcopy(cache)
        rows = int(fresh.layers[0].keys.shape[0]) if fresh.layers else batch
        if rows == batch:
            return fresh
        if from_layer == 0:
            fresh.batch_repeat_interleave(batch)
            return fresh
        for index, layer in enumerate(fresh.layers):
            if index >= from_layer:
                layer.batch_repeat_interleave(batch)
        return fresh

    def forward(self, model, tokens, cache, *, prefix_len, stop):
        """Run `tokens` after the cached prefix, with an attention mask over prefix and new positions."""
        return self._call(model, tokens, cache, width=prefix_len + tokens.shape[1], stop=stop)


def _hooked_cache_class():
    try:
        from transformer_lens import TransformerLensKeyValueCache as cache_class
    except ImportError:
        try:
            from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache as cache_class
        except ImportError:
            return None
    return cache_class


class HookedCache(CachedBackend):
    """HookedTransformer's key/value cache, frozen after the prefix."""

    name = "hooked"

    def build(self, model, tokens):
        """Run the prefix `tokens` into a new HookedTransformer cache and freeze it."""
        batch, width = tokens.shape
        cache = _hooked_cache_class().init_cache(model.cfg, tokens.device, batch)
        model(tokens, past_kv_cache=cache, attention_mask=_ones(batch, width, tokens.device))
        cache.freeze()
        return cache

    def length(self, cache) -> int:
        """Positions held, from the cache's attention mask."""
        return int(cache.previous_attention_mask.shape[1])

    def _rebuilt(self, cache, keys, values, mask):
        entry_class = type(cache.entries[0])
        entries = [entry_class(past_keys=k, past_values=v, frozen=True) for k, v in zip(keys, values, strict=True)]
        return type(cache)(entries=entries, previous_attention_mask=mask, frozen=True)

    def cut(self, cache, length: int):
        """A new frozen cache of the first `length` positions' keys, values and mask."""
        keys = [e.past_keys[:, :length] for e in cache.entries]
        values = [e.past_values[:, :length] for e in cache.entries]
        return self._rebuilt(cache, keys, values, cache.previous_attention_mask[:, :length])

    def expanded(self, cache, batch: int, *, from_layer: int = 0):
        """A frozen cache whose keys, values and mask are expanded (not copied) to `batch` rows in every layer."""
        keys = [e.past_keys.expand(batch, *e.past_keys.shape[1:]) for e in cache.entries]
        values = [e.past_values.expand(batch, *e.past_values.shape[1:]) for e in cache.entries]
        return self._rebuilt(cache, keys, values, cache.previous_attention_mask.expand(batch, -1))

    def forward(self, model, tokens, cache, *, prefix_len, stop):
        """Run `tokens` after the frozen prefix, with an attention mask over the new positions only."""
        # HookedTransformer appends the new positions' mask to the cache's own.
        new_mask = _ones(tokens.shape[0], tokens.shape[1], tokens.device)
        return model(tokens, past_kv_cache=cache, attention_mask=new_mask, stop_at_layer=stop)


def _hf_refusal(original) -> str:
    """Why this transformers model cannot reuse a key/value prefix ("" when it can).

    A prefix is reused by cutting it to shorter lengths and repeating it over rows, which
    needs per-position keys and values in every layer: a recurrent state (Mamba, RWKV, the
    linear-attention layers of hybrids) holds the whole past in one tensor.
    """
    parameters = inspect.signature(original.forward).parameters
    if "cache" not in parameters and "past_key_values" not in parameters:
        return f"{type(original).__name__}.forward takes no key/value cache"
    supports = getattr(type(original), "_supports_default_dynamic_cache", None)
    if getattr(original, "_is_stateful", False) or (supports is not None and not supports()):
        return f"{type(original).__name__} keeps a recurrent state, not per-position keys and values"
    from transformers import DynamicCache

    try:
        layers = DynamicCache(config=original.config).layers
    except Exception:
        return ""
    if any(not hasattr(layer, "keys") or type(layer).__name__.startswith("LinearAttention") for layer in layers):
        return f"{type(original).__name__} has layers whose cache is a recurrent state"
    return ""


_CACHE_WRITES: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def _unwritten_cache(model: nn.Module, backend: HFCache) -> str:
    """Why the bridge leaves transformers' cache empty ("" when its attention writes it).

    Some attention bridges compute attention themselves and never update the cache they are
    handed (TransformerLens 3.9's MPT ALiBi attention), so a prefix cache holds nothing. Probed
    once per model on two tokens, by handing the model an empty cache directly (not through
    `build`, whose own failures are the self-check's to catch): such a model has no cache
    backend, like a recurrent one (`_hf_refusal`), rather than a fast path whose self-check
    must fail on every call.
    """
    known = _CACHE_WRITES.get(model)
    if known is None:
        from .preserve import preserved

        cfg: Any = model.cfg  # the TransformerLens config (untyped), not a submodule
        tokens = ((torch.arange(2) * 7 + 3) % int(cfg.d_vocab))[None].to(next(model.parameters()).device)
        try:
            with torch.no_grad(), preserved(model):
                cache = backend._empty(model)
                backend._call(model, tokens, cache, width=2, stop=None)
                held = backend.length(cache)
        except Exception:  # noqa: BLE001 - the self-check reports a backend that cannot run
            held = 2
        known = "" if held == 2 else (
            f"{type(model.original_model).__name__}'s attention bridge does not write the key/value cache "
            f"(it holds {held} of 2 positions after a prefix)")
        _CACHE_WRITES[model] = known
    return known


def backend_for(adapter) -> CacheBackend:
    """The cache backend this model supports (unverified), or `Recompute` with the reason."""
    if not adapter.is_bridge:
        if _hooked_cache_class() is None:
            return Recompute("this TransformerLens has no key/value cache class")
        return HookedCache()
    original = getattr(adapter.model, "original_model", None)
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers ships with every HF bridge
        return Recompute("transformers is not installed")
    if not isinstance(original, PreTrainedModel):
        return Recompute("the bridge wraps no transformers model")
    refusal = _hf_refusal(original)
    if refusal:
        return Recompute(refusal)
    backend = HFCache(adapter.model)
    unwritten = _unwritten_cache(adapter.model, backend)
    return Recompute(unwritten) if unwritten else backend


__all__ = ["CacheBackend", "CachedBackend", "HFCache", "HookedCache", "Recompute", "backend_for"]
