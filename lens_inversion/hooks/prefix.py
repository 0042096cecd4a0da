"""Run only new positions after a fixed, already-computed prefix.

`PrefixState.build(model, prefix_tokens)` computes the prefix once; `run_after(prefix,
new_tokens_or_embeds, capture=...)` then runs a batch of continuations, returning
activations of the new positions only (positions relative to the new part). Three
backends give identical results:

- `"hf"`: HF-booted TransformerBridge, reusing the transformers key/value cache
  (`past_key_values`); the stored cache is copied per call, never mutated.
- `"hooked"`: HookedTransformer, reusing its frozen key/value cache.
- `"recompute"`: any other model (native bridges): the full sequence is run and sliced.
  Hooks still see only the new positions, so a hook behaves the same on every backend.
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from .._typing import Embeds, Tokens
from ..errors import OptionError, PromptError, check_choice
from .adapter import Capture, CapturePlan, ModelAdapter, adapter_for
from .interventions import HookFn, attached
from .sites import Site

Reuse = Literal["auto", "cache", "recompute"]
REUSE = ("auto", "cache", "recompute")


def _hf_cache_class():
    try:
        from transformers import DynamicCache
    except ImportError:  # pragma: no cover - transformers ships with every HF bridge
        return None
    return DynamicCache


def _hooked_cache_class():
    try:
        from transformer_lens import TransformerLensKeyValueCache as cache_class
    except ImportError:
        try:
            from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache as cache_class
        except ImportError:
            return None
    return cache_class


def _cache_backend(adapter: ModelAdapter) -> str:
    """Which key/value cache this model supports, or "recompute"."""
    model = adapter.model
    if adapter.is_bridge:
        original = getattr(model, "original_model", None)
        try:
            from transformers import PreTrainedModel
        except ImportError:  # pragma: no cover
            return "recompute"
        return "hf" if isinstance(original, PreTrainedModel) and _hf_cache_class() else "recompute"
    return "hooked" if _hooked_cache_class() is not None else "recompute"


def _ones(batch: int, width: int, device) -> Tensor:
    return torch.ones(batch, width, dtype=torch.long, device=device)


@dataclass(frozen=True, kw_only=True, eq=False)
class PrefixState:
    """A computed prefix: its tokens and, where the backend has one, its key/value cache.

    Build it with `PrefixState.build`; it is read-only afterwards and can be shared by any
    number of `run_after` calls.
    """

    adapter: ModelAdapter
    tokens: Tokens  # [1 or batch, prefix_len]
    backend: str  # "hf" | "hooked" | "recompute"
    cache: object | None = None
    hooks: tuple[tuple[str, HookFn], ...] = ()

    @classmethod
    def build(
        cls,
        model,
        prefix_tokens: Tensor,
        *,
        reuse: Reuse = "auto",
        hooks: Sequence[tuple[str, HookFn]] = (),
    ) -> "PrefixState":
        """Compute the prefix once.

        Args:
            model: a TransformerLens model or its ModelAdapter.
            prefix_tokens: [prefix_len] or [batch, prefix_len] ids; prefix_len may be 0.
            reuse: `"auto"` (the key/value cache where the backend has one), `"cache"`
                (require a cache; OptionError otherwise) or `"recompute"`.
            hooks: (hook name, fn) pairs that were active on the prefix; they are applied to
                the prefix positions only (the continuation gets its own `hooks`).
        """
        check_choice("reuse", reuse, REUSE)
        adapter = adapter_for(model)
        tokens = torch.as_tensor(prefix_tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or tokens.is_floating_point():
            raise PromptError(
                f"prefix_tokens must be integer ids of shape [pos] or [batch, pos]; got {tuple(tokens.shape)}."
            )
        tokens = tokens.to(adapter.device)
        backend = _cache_backend(adapter)
        if reuse == "cache" and backend == "recompute":
            raise OptionError(
                "reuse='cache' needs an HF-booted bridge or a HookedTransformer; "
                f"got a {type(adapter.model).__name__} without a key/value cache."
            )
        if reuse == "recompute" or tokens.shape[1] == 0:
            backend = "recompute"
        cache = None
        if backend != "recompute":
            with torch.no_grad(), attached(adapter.model, list(hooks)):
                cache = _build_cache(adapter, backend, tokens)
        return cls(adapter=adapter, tokens=tokens, backend=backend, cache=cache, hooks=tuple(hooks))

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])

    def truncated(self, length: int) -> "PrefixState":
        """The same prefix cut to its first `length` positions, without running the model.

        Keys and values of a causal model at positions < length do not depend on later
        tokens, so cutting a longer prefix's cache equals building the shorter one (up to
        float rounding of the longer matmuls).
        """
        if not 0 <= length <= self.length:
            raise OptionError(f"Cannot cut a prefix of length {self.length} to {length}; valid: 0..{self.length}.")
        tokens = self.tokens[:, :length]
        if length == self.length:
            return self
        if length == 0 or self.backend == "recompute":
            return replace(self, tokens=tokens, backend="recompute" if length == 0 else self.backend, cache=None)
        if self.backend == "hf":
            cache = copy.deepcopy(self.cache)
            cache.crop(length - self.length)  # a negative count removes that many positions (transformers 4 and 5)
        else:
            cache = _cut_hooked_cache(self.cache, length)
        return replace(self, tokens=tokens, cache=cache)

    def __repr__(self) -> str:
        return f"PrefixState(length={self.length}, batch={self.tokens.shape[0]}, backend={self.backend!r})"


def _build_cache(adapter: ModelAdapter, backend: str, tokens: Tokens):
    model = adapter.model
    batch, width = tokens.shape
    if backend == "hf":
        cache = _hf_cache_class()()
        model(tokens, past_key_values=cache, attention_mask=_ones(batch, width, tokens.device))
        return cache
    cache = _hooked_cache_class().init_cache(model.cfg, tokens.device, batch)
    model(tokens, past_kv_cache=cache, attention_mask=_ones(batch, width, tokens.device))
    cache.freeze()
    return cache


def _cut_hooked_cache(cache, length: int):
    """A HookedTransformer key/value cache holding only the first `length` positions."""
    entry_class = type(cache.entries[0])
    entries = [
        entry_class(past_keys=e.past_keys[:, :length], past_values=e.past_values[:, :length], frozen=True)
        for e in cache.entries
    ]
    return type(cache)(entries=entries, previous_attention_mask=cache.previous_attention_mask[:, :length], frozen=True)


def _expanded_cache(prefix: PrefixState, batch: int):
    """A per-call copy of the prefix cache for `batch` rows; the stored cache is never touched."""
    cache = prefix.cache
    rows = prefix.tokens.shape[0]
    if prefix.backend == "hf":
        fresh = copy.deepcopy(cache)
        if rows != batch:
            fresh.batch_repeat_interleave(batch)
        return fresh
    cache_class = type(cache)
    entry_class = type(cache.entries[0])
    entries = [
        entry_class(
            past_keys=e.past_keys.expand(batch, *e.past_keys.shape[1:]),
            past_values=e.past_values.expand(batch, *e.past_values.shape[1:]),
            frozen=True,
        )
        for e in cache.entries
    ]
    mask = cache.previous_attention_mask.expand(batch, -1)
    return cache_class(entries=entries, previous_attention_mask=mask, frozen=True)


def _sliced_hook(fn: HookFn, start: int, stop: int | None) -> HookFn:
    """Show `fn` only positions [start:stop] of the full run and splice back its edit."""

    def hook(x, hook_point):
        if x.ndim < 2:
            return fn(x, hook_point)
        part = x[:, start:stop]
        out = fn(part, hook_point)
        if out is None:
            return None
        return torch.cat([x[:, :start], out, x[:, stop:] if stop is not None else x[:, :0]], dim=1)

    return hook


def run_after(
    prefix: PrefixState,
    tokens: Tokens | None = None,
    *,
    embeds: Embeds | None = None,
    capture: Sequence[tuple[Site, int | None]] = (),
    hooks: Sequence[tuple[str, HookFn]] = (),
    need_logits: bool = False,
) -> Capture:
    """Run new positions after `prefix`, stopping after the deepest captured block.

    Args:
        prefix: a `PrefixState` (one prefix broadcast over the batch, or one per row).
        tokens: [batch, n] new ids. May be omitted when `embeds` are given.
        embeds: [batch, n, d_model] replacement for the new positions' embedding-hook output
            (W_E rows times `embed_scale`); gradients flow back to them.
        capture: (site, layer) pairs; each returned tensor is [batch, n, ...] (new positions).
        hooks: (hook name, fn) pairs for this run; fn sees the new positions only.
        need_logits: run to the end and return the new positions' logits.

    Returns:
        A `Capture` whose activations and logits cover the new positions only.
    """
    adapter = prefix.adapter
    if tokens is None:
        if embeds is None:
            raise PromptError("run_after() needs tokens or embeds.")
        tokens = torch.zeros(embeds.shape[:2], dtype=torch.long, device=adapter.device)
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise PromptError(f"New tokens must be [batch, n] with n >= 1; got shape {tuple(tokens.shape)}.")
    batch, n = tokens.shape
    rows, p = prefix.tokens.shape
    if rows not in (1, batch):
        raise PromptError(f"The prefix has {rows} rows; the continuation batch must be 1 or {rows}, got {batch}.")
    if p + n > adapter.n_ctx:
        raise PromptError(f"Prefix ({p}) plus new positions ({n}) exceed the model's context n_ctx={adapter.n_ctx}.")
    if prefix.backend == "recompute":
        return _run_recompute(prefix, tokens, embeds, capture, hooks, need_logits)

    plan = CapturePlan.make(adapter.n_layers, capture, embeds, need_logits=need_logits)
    stop, acts, run_hooks = plan.stop, plan.acts, plan.hooks
    cache = _expanded_cache(prefix, batch)
    mask = _ones(batch, p + n, tokens.device)
    with attached(adapter.model, list(hooks) + run_hooks):
        if prefix.backend == "hf":
            out = adapter.model(tokens, past_key_values=cache, attention_mask=mask, stop_at_layer=stop)
        else:
            # HookedTransformer appends the new mask to the cache's own.
            new_mask = _ones(batch, n, tokens.device)
            out = adapter.model(tokens, past_kv_cache=cache, attention_mask=new_mask, stop_at_layer=stop)
    return Capture(acts=acts, logits=out if stop is None else None)


def _run_recompute(prefix, tokens, embeds, capture, hooks, need_logits) -> Capture:
    adapter = prefix.adapter
    batch, n = tokens.shape
    p = prefix.length
    head = prefix.tokens.expand(batch, -1)
    full_tokens = torch.cat([head, tokens], dim=1)
    full_embeds = None
    if embeds is not None:
        full_embeds = torch.cat([adapter.embed(head).to(embeds.dtype), embeds], dim=1)
    run_hooks = [(name, _sliced_hook(fn, 0, p)) for name, fn in prefix.hooks] if p else []
    run_hooks += [(name, _sliced_hook(fn, p, None)) for name, fn in hooks]
    full = adapter.run(full_tokens, embeds=full_embeds, capture=capture, hooks=run_hooks, need_logits=need_logits)
    acts = {key: value[:, p:] for key, value in full.acts.items()}
    return Capture(acts=acts, logits=None if full.logits is None else full.logits[:, p:])


__all__ = ["PrefixState", "run_after"]
