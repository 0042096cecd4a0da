"""The one place that runs the model: full runs, runs after a prefix, cut prefixes, layered runs.

- `run_full`: run the model on tokens (or replacement embeddings), stopping after the
  deepest captured block (`ModelAdapter.run` calls it).
- `PrefixState.build` + `run_after`: run only new positions after a prefix computed once.
  The prefix's keys/values live in a `kv_cache` backend; positions before the new ones
  are never recomputed. `PrefixState.truncated` cuts a longer prefix without running.
- `run_after_layered`: like `run_after`, but blocks below a layer run one row and blocks
  from it up run several rows (ablation sweeps).
- `readout_only`: hooks that unembed only the positions a metric reads.

Every fast path proves itself: before a backend, a cut, a layered run or the readout
cut is used on a model for the first time, `fast_paths` compares it with the reference
path on a small probe (cached per model, see `selfcheck`). A fast path that disagrees is
not used: the call falls back to the reference path (full recomputation, all positions)
and warns, or raises in strict mode.
"""

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .._typing import Embeds, Logits, Tokens
from ..errors import OptionError, PromptError, check_choice
from .interventions import HookFn, attached
from .kv_cache import CacheBackend, CachedBackend, Recompute, backend_for
from .sites import Norm, Site, norm_hook_name, site_hook_name

Reuse = str  # "auto" | "cache" | "recompute"
REUSE = ("auto", "cache", "recompute")
HookPair = tuple[str, HookFn]


@dataclass(frozen=True, kw_only=True)
class Capture:
    """Activations captured in one run, keyed by (site, layer), plus logits when run to the end."""

    acts: dict[tuple[Site, int | None], Tensor]
    logits: Logits | None

    def __getitem__(self, key: tuple[Site, int | None]) -> Tensor:
        site, layer = key
        if site is Site.LOGITS:
            if self.logits is None:
                raise KeyError("logits were not computed in this run")
            return self.logits
        return self.acts[(site, layer)]

    def require_logits(self) -> Logits:
        """The logits of a run made to the end (`need_logits=True`); KeyError if it stopped early."""
        return self[Site.LOGITS, None]


@dataclass
class CapturePlan:
    """Where a capturing run may stop, the hooks that record its activations, and their store."""

    stop: int | None
    acts: dict
    hooks: list

    @classmethod
    def make(cls, n_layers: int, capture, embeds: Tensor | None, *, need_logits: bool) -> "CapturePlan":
        """Plan a run that captures `capture` (site, layer) pairs, optionally replacing the embedding."""
        capture = list(dict.fromkeys(capture))
        need_logits = need_logits or any(site is Site.LOGITS for site, _ in capture)
        deepest = max((layer for site, layer in capture if site.per_block), default=-1)
        stop = None if need_logits or deepest + 1 >= n_layers else deepest + 1
        acts: dict[tuple[Site, int | None], Tensor] = {}

        def saver(key):
            def save(x, hook):
                acts[key] = x

            return save

        hooks: list[tuple[str, HookFn]] = []
        if embeds is not None:
            hooks.append((site_hook_name(Site.EMBED, None), lambda x, hook: embeds.to(x.dtype)))
        hooks += [(site_hook_name(s, layer), saver((s, layer))) for s, layer in capture if s is not Site.LOGITS]
        return cls(stop=stop, acts=acts, hooks=hooks)


_MASK_BREAKS_CAUSALITY: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def mask_breaks_causality(model) -> bool:
    """Whether an explicit mask makes earlier positions see later tokens (OpenAI GPT's bridge).

    Measured once per model, before any hook of ours is attached (`ModelAdapter`): two
    sequences that differ only in their last token must give the same logits at every
    earlier position.
    """
    known = _MASK_BREAKS_CAUSALITY.get(model)
    if known is None:
        vocab = int(model.cfg.d_vocab)
        first = (torch.arange(4) * 7 + 3)[None] % vocab
        second = first.clone()
        second[0, -1] = (second[0, -1] + 1) % vocab
        from .preserve import preserved

        device = next(model.parameters()).device
        try:
            with torch.no_grad(), preserved(model):  # no hook of ours or the user's sees the probe
                a, b = (model(t.to(device), attention_mask=torch.ones_like(t).to(device)) for t in (first, second))
        except Exception:  # a model that cannot run this probe fails in the real call, with its own error
            return False
        scale = max(float(a.abs().max()), 1e-12)
        known = _MASK_BREAKS_CAUSALITY[model] = float((a[0, :-1] - b[0, :-1]).abs().max()) > 1e-4 * scale
    return known


def forward_tokens(model, tokens: Tokens, **kwargs) -> Tensor:
    """The model on token ids with an explicit all-ones mask (no cache arguments).

    Right padding needs no mask in a causal model, and the explicit mask stops a backend
    from masking BOS when BOS doubles as the pad token. A model that an explicit mask makes
    non-causal runs without one.
    """
    if _MASK_BREAKS_CAUSALITY.get(model, False):  # measured when the model's adapter is made
        return model(tokens, **kwargs)
    return model(tokens, attention_mask=torch.ones_like(tokens), **kwargs)


def run_full(
    adapter,
    tokens: Tokens | None = None,
    *,
    embeds: Embeds | None = None,
    capture: Sequence[tuple[Site, int | None]] = (),
    hooks: Sequence[HookPair] = (),
    need_logits: bool = False,
) -> Capture:
    """Run the whole sequence, stopping after the deepest block that `capture` needs."""
    if tokens is None:
        if embeds is None:
            raise PromptError("run() needs tokens or embeds.")
        tokens = torch.zeros(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    plan = CapturePlan.make(adapter.n_layers, capture, embeds, need_logits=need_logits)
    with attached(adapter.model, list(hooks) + plan.hooks):
        out = forward_tokens(adapter.model, tokens, stop_at_layer=plan.stop)
    # HookedTransformer returns logits unless stopped; the bridge always does at the end.
    return Capture(acts=plan.acts, logits=out if plan.stop is None else None)


def run_padded(
    adapter,
    tokens: Tokens,
    *,
    attention_mask: Tensor,
    position_ids: Tensor,
    capture: Sequence[tuple[Site, int | None]] = (),
    need_logits: bool = False,
) -> Capture:
    """Run a left-padded batch with its attention mask (and, on a bridge, its position ids).

    HookedTransformer derives positions from the mask itself; a bridge passes both on to the
    Hugging Face model. Whether a model honours them is not assumed: the corpus jobs compare
    such a run with the rows' unpadded runs before they use it.
    """
    plan = CapturePlan.make(adapter.n_layers, capture, None, need_logits=need_logits)
    kwargs = {"attention_mask": attention_mask.to(tokens.device).long()}
    if adapter.is_bridge:
        kwargs["position_ids"] = position_ids.to(tokens.device)
    with attached(adapter.model, plan.hooks):
        out = adapter.model(tokens, stop_at_layer=plan.stop, **kwargs)
    return Capture(acts=plan.acts, logits=out if plan.stop is None else None)


# ----- prefixes ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, eq=False)
class PrefixState:
    """A computed prefix: its tokens and, where the backend has one, its key/value cache.

    Build it with `PrefixState.build`; it is read-only afterwards and can be shared by any
    number of `run_after` calls.
    """

    adapter: Any  # a ModelAdapter (hooks.adapter imports this module, so it is not named here)
    tokens: Tokens  # [1 or batch, prefix_len]
    backend: CacheBackend
    cache: object | None = None
    hooks: tuple[HookPair, ...] = ()

    @classmethod
    def build(cls, model, prefix_tokens: Tensor, *, reuse: Reuse = "auto", hooks: Sequence[HookPair] = ()) -> "PrefixState":
        """Compute the prefix once.

        Args:
            model: a TransformerLens model or its ModelAdapter.
            prefix_tokens: [prefix_len] or [batch, prefix_len] ids; prefix_len may be 0.
            reuse: `"auto"` (the key/value cache where the backend has one and it passes its
                self-check), `"cache"` (require a cache; OptionError otherwise) or `"recompute"`.
            hooks: (hook name, fn) pairs that were active on the prefix; they are applied to
                the prefix positions only (the continuation gets its own `hooks`).
        """
        from . import fast_paths
        from .adapter import adapter_for

        check_choice("reuse", reuse, REUSE)
        adapter = adapter_for(model)
        tokens = _prefix_tokens(adapter, prefix_tokens)
        backend = backend_for(adapter)
        if reuse == "cache" and not backend.has_cache:
            raise OptionError(
                "reuse='cache' needs an HF-booted bridge or a HookedTransformer; "
                f"got a {type(adapter.model).__name__} without a key/value cache."
            )
        if reuse == "recompute" or tokens.shape[1] == 0 or not isinstance(backend, CachedBackend):
            return cls(adapter=adapter, tokens=tokens, backend=Recompute(), hooks=tuple(hooks))
        if not fast_paths.cache_verified(adapter, backend):
            return cls(adapter=adapter, tokens=tokens, backend=Recompute(), hooks=tuple(hooks))
        return build_unchecked(adapter, tokens, backend, hooks)

    @property
    def length(self) -> int:
        """Number of prefix positions."""
        return int(self.tokens.shape[1])

    @property
    def cached(self) -> bool:
        """Whether the prefix lives in a key/value cache (False: each run recomputes it)."""
        return self.backend.has_cache

    def truncated(self, length: int) -> "PrefixState":
        """The same prefix cut to its first `length` positions, without running the model.

        Keys and values of a causal model at positions < length do not depend on later
        tokens, so cutting a longer prefix's cache equals building the shorter one (up to
        float rounding); the cut is checked once per model against a fresh prefix.
        """
        from . import fast_paths

        if not 0 <= length <= self.length:
            raise OptionError(f"Cannot cut a prefix of length {self.length} to {length}; valid: 0..{self.length}.")
        if length == self.length:
            return self
        tokens = self.tokens[:, :length]
        backend = self.backend
        if length == 0 or not isinstance(backend, CachedBackend) or not fast_paths.cut_verified(self.adapter, backend):
            return replace(self, tokens=tokens, backend=Recompute(), cache=None)
        return replace(self, tokens=tokens, cache=backend.cut(self.cache, length))

    def __repr__(self) -> str:
        return f"PrefixState(length={self.length}, batch={self.tokens.shape[0]}, backend={self.backend.name!r})"


def _prefix_tokens(adapter, prefix_tokens) -> Tokens:
    tokens = torch.as_tensor(prefix_tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.is_floating_point():
        raise PromptError(f"prefix_tokens must be integer ids of shape [pos] or [batch, pos]; got {tuple(tokens.shape)}.")
    return tokens.to(adapter.device)


def build_unchecked(adapter, tokens: Tokens, backend: CachedBackend, hooks: Sequence[HookPair] = ()) -> PrefixState:
    """A prefix on `backend` without its self-check (used by the self-check itself)."""
    with torch.no_grad(), attached(adapter.model, list(hooks)):
        cache = backend.build(adapter.model, tokens)
    return PrefixState(adapter=adapter, tokens=tokens, backend=backend, cache=cache, hooks=tuple(hooks))


def _sliced_hook(fn: HookFn, start: int, stop: int | None) -> HookFn:
    """Show `fn` only positions [start:stop] of the full run and splice back its edit."""

    def hook(x, hook_point):
        if x.ndim < 2:
            return fn(x, hook_point)
        out = fn(x[:, start:stop], hook_point)
        if out is None:
            return None
        # An edit may turn one row into several (sweeps): the unedited parts follow it.
        parts = [x[:, :start], out, x[:, stop:] if stop is not None else x[:, :0]]
        rows = out.shape[0]
        return torch.cat([part.expand(rows, *part.shape[1:]) for part in parts], dim=1)

    return hook


def _check_continuation(prefix: PrefixState, tokens, embeds) -> Tokens:
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
    return tokens


def run_after(
    prefix: PrefixState,
    tokens: Tokens | None = None,
    *,
    embeds: Embeds | None = None,
    capture: Sequence[tuple[Site, int | None]] = (),
    hooks: Sequence[HookPair] = (),
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
    tokens = _check_continuation(prefix, tokens, embeds)
    backend = prefix.backend
    if not isinstance(backend, CachedBackend):
        return _run_recompute(prefix, tokens, embeds, capture, hooks, need_logits)
    adapter = prefix.adapter
    plan = CapturePlan.make(adapter.n_layers, capture, embeds, need_logits=need_logits)
    cache = backend.expanded(prefix.cache, tokens.shape[0])
    with attached(adapter.model, list(hooks) + plan.hooks):
        out = backend.forward(adapter.model, tokens, cache, prefix_len=prefix.length, stop=plan.stop)
    return Capture(acts=plan.acts, logits=out if plan.stop is None else None)


def _run_recompute(prefix, tokens, embeds, capture, hooks, need_logits) -> Capture:
    adapter = prefix.adapter
    p = prefix.length
    head = prefix.tokens.expand(tokens.shape[0], -1)
    full_tokens = torch.cat([head, tokens], dim=1)
    full_embeds = None
    if embeds is not None:
        full_embeds = torch.cat([adapter.embed(head).to(embeds.dtype), embeds], dim=1)
    run_hooks = [(name, _sliced_hook(fn, 0, p)) for name, fn in prefix.hooks] if p else []
    run_hooks += [(name, _sliced_hook(fn, p, None)) for name, fn in hooks]
    full = run_full(adapter, full_tokens, embeds=full_embeds, capture=capture, hooks=run_hooks, need_logits=need_logits)
    acts = {key: value[:, p:] for key, value in full.acts.items()}
    return Capture(acts=acts, logits=None if full.logits is None else full.logits[:, p:])


# ----- layered runs (sweeps) ---------------------------------------------------------------
def supports_layered(prefix: PrefixState) -> bool:
    """Whether rows may differ per layer after this prefix (checked once per model)."""
    from . import fast_paths

    backend = prefix.backend
    return isinstance(backend, CachedBackend) and backend.can_layer and fast_paths.layered_verified(prefix.adapter, backend)


def run_after_layered(prefix: PrefixState, tokens: Tensor, *, rows: int, from_layer: int, hooks: Sequence[HookPair]) -> Tensor:
    """Logits of `tokens` [1, n] after `prefix`, with `rows` rows from block `from_layer` up.

    Blocks below `from_layer` run one row, blocks from it up run `rows` rows, so a hook
    there may expand its [1, n, d] activation into `rows` different rows. The prefix's
    keys/values are reused (never recomputed); without a layered cache (see
    `supports_layered`) the full sequence is run with the hooks seeing positions p.. only.
    """
    backend = prefix.backend
    if not supports_layered(prefix) or not isinstance(backend, CachedBackend):
        return _run_recompute(prefix, tokens, None, (), hooks, True).require_logits()
    cache = backend.expanded(prefix.cache, rows, from_layer=from_layer)
    with attached(prefix.adapter.model, list(hooks)):
        return backend.forward(prefix.adapter.model, tokens, cache, prefix_len=prefix.length, stop=None)


# ----- readout-only unembedding --------------------------------------------------------------
def readout_hook_name(adapter) -> str:
    # Bridge: cut at the unembedding's input (HF reshapes the final norm's output to the
    # input's length). HookedTransformer: at the final norm's pre-affine output.
    return "unembed.hook_in" if adapter.is_bridge else norm_hook_name(Norm.FINAL, None, "normalized")


def readout_unchecked(adapter, positions: list[int]) -> list[HookPair]:
    name = readout_hook_name(adapter)
    if name not in adapter.model.hook_dict:
        return []
    index = torch.tensor(positions, device=adapter.device)
    return [(name, lambda x, hook: x.index_select(1, index))]


def readout_only(adapter, positions: list[int]) -> list[HookPair]:
    """Hooks that keep only `positions` after the final norm, so the unembedding runs on those alone.

    With them the model returns logits [batch, len(positions), d_vocab]. Where the model
    has no hook there, or the cut failed its self-check, no hooks are returned: the model
    then gives every position, and callers index the logits (check `len(pairs)`).
    """
    from . import fast_paths

    if not fast_paths.readout_verified(adapter):
        return []
    return readout_unchecked(adapter, positions)


__all__ = [
    "REUSE", "Capture", "CapturePlan", "PrefixState", "forward_tokens", "readout_only", "run_after",
    "run_after_layered", "run_full", "supports_layered",
]
