"""The self-check of every fast path: a small probe run both ways, compared once per model.

Each `*_verified` function returns whether its fast path may be used (see `selfcheck`
for caching, warnings, fallback and strict mode); `run_all` runs every check that applies
to a model (the `doctor` command and the report's self-checks panel).
"""

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import selfcheck
from .execution import Capture, PrefixState, build_unchecked, readout_unchecked, run_after, run_full, run_padded
from .interventions import attached
from .kv_cache import CacheBackend, CachedBackend, backend_for
from .selfcheck import Comparison, Verdict, compare
from .sites import Site, site_hook_name

PREFIX, NEW, ROWS = 4, 3, 2


def _sizes(adapter) -> tuple[int, int]:
    n_ctx = adapter.n_ctx
    prefix = max(1, min(PREFIX, n_ctx // 2))
    return prefix, max(1, min(NEW, n_ctx - prefix))


def _probe_tokens(adapter, width: int) -> Tensor:
    """Fixed, varied token ids (no random draw: the global RNG is never touched)."""
    ids = (torch.arange(width) * 7919 + 3) % adapter.d_vocab
    return ids[None].to(adapter.device)


_REFERENCE: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, Capture]]" = weakref.WeakKeyDictionary()


def _reference(adapter) -> Capture:
    """The probe tokens' full run (last residual and logits), shared by the checks that compare to it."""
    p, n = _sizes(adapter)
    key = selfcheck.config_key(adapter)
    held = _REFERENCE.get(adapter.model)
    if held is None or held[0] != key:
        tokens = _probe_tokens(adapter, p + n)
        capture = run_full(adapter, tokens, capture=[_last_residual(adapter)], need_logits=True)
        held = _REFERENCE[adapter.model] = (key, capture)
    return held[1]


def forget_probes(model) -> None:
    """Drop the shared reference run of `model` (benchmarks; new weights invalidate it by themselves)."""
    _REFERENCE.pop(getattr(model, "model", model), None)


def _last_residual(adapter) -> tuple[Site, int]:
    return (Site.RESID_POST, adapter.n_layers - 1)


def _joined(capture, key) -> Tensor:
    return torch.cat([capture[key].flatten(), capture.require_logits().flatten()])


def _cache_probe(adapter, backend: CachedBackend) -> Comparison:
    p, n = _sizes(adapter)
    tokens = _probe_tokens(adapter, p + n)
    new = torch.cat([tokens[:, p:], tokens[:, p:].flip(1)])
    prefix = build_unchecked(adapter, tokens[:, :p], backend)
    held = backend.length(prefix.cache)
    if held != p:
        return Comparison(float("inf"), 1.0, f"; the cache holds {held} positions where {p} were expected")
    key = (Site.RESID_POST, adapter.n_layers - 1)
    got = run_after(prefix, new, capture=[key], need_logits=True)
    full = run_full(adapter, torch.cat([tokens[:, :p].expand(ROWS, -1), new], 1), capture=[key], need_logits=True)
    reference = torch.cat([full[key][:, p:].flatten(), full.require_logits()[:, p:].flatten()])
    return compare(_joined(got, key), reference)




def _cut_probe(adapter, backend: CachedBackend) -> Comparison:
    p, n = _sizes(adapter)
    tokens = _probe_tokens(adapter, p + n)
    longest = build_unchecked(adapter, tokens[:, : p + n - 1], backend)
    short = max(1, p // 2)
    cut = backend.cut(longest.cache, short)
    held = backend.length(cut)
    if held != short:
        return Comparison(float("inf"), 1.0, f"; the cut cache holds {held} positions where {short} were expected")
    prefix = PrefixState(adapter=adapter, tokens=tokens[:, :short], backend=backend, cache=cut)
    got = run_after(prefix, tokens[:, short:], need_logits=True).require_logits()
    return compare(got, _reference(adapter).require_logits()[:, short:])




def _scaled_rows(start: int):
    """A hook that turns one row into ROWS rows, row r scaled by 1/(r+1) from `start` on."""

    def hook(x, hook_point):
        out = x.expand(ROWS, *x.shape[1:]).clone()
        scale = 1.0 / torch.arange(1, ROWS + 1, dtype=x.dtype, device=x.device)
        out[:, start:] = out[:, start:] * scale[:, None, None]
        return out

    return hook


def _layered_probe(adapter, backend: CachedBackend) -> Comparison:
    p, n = _sizes(adapter)
    tokens = _probe_tokens(adapter, p + n)
    layer = adapter.n_layers - 1
    name = site_hook_name(Site.RESID_PRE, layer)
    prefix = build_unchecked(adapter, tokens[:, :p], backend)
    cache = backend.expanded(prefix.cache, ROWS, from_layer=layer)
    with attached(adapter.model, [(name, _scaled_rows(0))]):
        got = backend.forward(adapter.model, tokens[:, p:], cache, prefix_len=p, stop=None)
    reference = run_full(adapter, tokens, hooks=[(name, _scaled_rows(p))], need_logits=True).require_logits()[:, p:]
    return compare(got, reference)




def _scaled_each_row(x, hook_point):
    """Row r scaled by 1/(r+1) (the reference of a hook that widens one row into ROWS)."""
    scale = 1.0 / torch.arange(1, x.shape[0] + 1, dtype=x.dtype, device=x.device)
    return x * scale[:, None, None]


def _widened_probe(adapter) -> Comparison:
    p, n = _sizes(adapter)
    tokens = _probe_tokens(adapter, p + n)
    name = site_hook_name(Site.RESID_PRE, adapter.n_layers - 1)
    got = run_full(adapter, tokens, hooks=[(name, _scaled_rows(0))], need_logits=True).require_logits()
    reference = run_full(adapter, tokens.expand(ROWS, -1), hooks=[(name, _scaled_each_row)], need_logits=True).require_logits()
    return compare(got, reference)


def _readout_probe(adapter) -> Comparison:
    p, n = _sizes(adapter)
    tokens = _probe_tokens(adapter, p + n)
    positions = [0, p + n - 1]
    got = run_full(adapter, tokens, hooks=readout_unchecked(adapter, positions), need_logits=True).require_logits()
    return compare(got, _reference(adapter).require_logits()[:, positions])




def _batched_probe(adapter) -> Comparison:
    p, n = _sizes(adapter)
    tokens = _probe_tokens(adapter, p + n)
    rows = torch.cat([tokens, tokens.flip(1)])
    got = run_full(adapter, rows, need_logits=True).require_logits()
    single = torch.cat([_reference(adapter).require_logits(), run_full(adapter, rows[1:], need_logits=True).require_logits()])
    return compare(got, single)




def _left_padding_probe(adapter) -> Comparison:
    """Two rows, the second left-padded by 2: each real position must equal its row's unpadded run."""
    p, n = _sizes(adapter)
    long = _probe_tokens(adapter, p + n)
    short = long.flip(1)[:, 2:] if p + n > 2 else long.flip(1)
    pad = long.shape[1] - short.shape[1]
    rows = torch.cat([long, torch.cat([torch.full_like(short[:, :pad], adapter.pad_token_id), short], 1)])
    mask = torch.ones_like(rows)
    mask[1, :pad] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    got = run_padded(adapter, rows, attention_mask=mask, position_ids=positions, need_logits=True).require_logits()
    alone = [_reference(adapter).require_logits()[0], run_full(adapter, short, need_logits=True).require_logits()[0]]
    return compare(torch.cat([got[0], got[1, pad:]]), torch.cat(alone))


def _lens_probe(adapter) -> Comparison:
    capture = _reference(adapter)
    return compare(adapter.lens_logits(capture[_last_residual(adapter)]), capture.require_logits())




@dataclass(frozen=True)
class Check:
    """One fast path's self-check: its name, what it compares, and the probe that measures it."""

    name: str  # "{backend}" is filled with the cache backend's name
    description: str
    probe: Callable[..., Comparison]  # probe(adapter) or probe(adapter, backend)
    fallback: bool = True  # False: no reference path exists, a failure is only reported

    def verdict(self, adapter, backend: CacheBackend | None = None, *, force: bool = False) -> Verdict:
        args = (adapter,) if backend is None else (adapter, backend)
        name = self.name.format(backend=getattr(backend, "name", ""))
        return selfcheck.verdict(adapter, name, self.description, lambda: self.probe(*args),
                                 fallback=self.fallback, force=force)


KV_PREFIX = Check("kv_prefix[{backend}]", "new positions run after a cached prefix equal the same positions of a full run",
                  _cache_probe)
CUT_PREFIX = Check("cut_prefix[{backend}]", "a longer prefix's cache cut to length k equals a prefix of length k",
                   _cut_probe)
LAYERED_RUN = Check("layered_run[{backend}]",
                    "one row below a layer and several above it, after a cached prefix, equals full runs of each row",
                    _layered_probe)
READOUT_ONLY = Check("readout_only", "unembedding only the read positions equals those positions of the full logits",
                     _readout_probe)
WIDENED_ROWS = Check("widened_rows", "a hook that turns one row into several mid-forward equals running every row "
                     "from the start", _widened_probe)
BATCHED_ROWS = Check("batched_rows", "a batch of different prompts equals each prompt run alone", _batched_probe)
LEFT_PADDING = Check("left_padding", "a left-padded row with its attention mask and position ids equals the row "
                     "run alone", _left_padding_probe)
LENS_ROW = Check("lens_row", "the lens output row equals the model's logits", _lens_probe, fallback=False)


def cache_verified(adapter, backend: CachedBackend) -> bool:
    """Whether new positions run after `backend`'s cached prefix equal a full run (KV_PREFIX)."""
    return KV_PREFIX.verdict(adapter, backend).passed


def cut_verified(adapter, backend: CachedBackend) -> bool:
    """Whether `backend`'s cache cut to a shorter length equals a prefix of that length (CUT_PREFIX)."""
    return CUT_PREFIX.verdict(adapter, backend).passed


def layered_verified(adapter, backend: CachedBackend) -> bool:
    """Whether rows that differ per layer after `backend`'s cached prefix equal full runs (LAYERED_RUN)."""
    return LAYERED_RUN.verdict(adapter, backend).passed


def readout_verified(adapter) -> bool:
    """Whether the unembedding may run on the read positions alone (True where there is no readout hook to cut at)."""
    if not readout_unchecked(adapter, [0]):
        return True  # no cut to check: callers index the full logits
    return READOUT_ONLY.verdict(adapter).passed


def widening_verified(adapter) -> bool:
    """Whether a hook may widen the batch in the middle of the forward pass (not on ALiBi models...)."""
    return WIDENED_ROWS.verdict(adapter).passed


def batched_verified(adapter) -> bool:
    """Whether different prompts batched together equal each prompt run alone (BATCHED_ROWS)."""
    return BATCHED_ROWS.verdict(adapter).passed


def left_padding_verified(adapter) -> bool:
    """Whether a left-padded row with its mask and position ids equals the row run alone (LEFT_PADDING)."""
    return LEFT_PADDING.verdict(adapter).passed


def lens_row_verdict(adapter, force: bool = False) -> Verdict:
    """The lens's last row (final norm + unembedding of the last residual) equals the logits."""
    adapter.check_lens_readout()  # a readout the lens cannot compose is refused, not measured
    return LENS_ROW.verdict(adapter, force=force)


def run_all(adapter, *, force: bool = True) -> list[Verdict]:
    """Every self-check that applies to this model (re-run unless `force=False`)."""
    backend = backend_for(adapter)
    cached = [KV_PREFIX, CUT_PREFIX, *([LAYERED_RUN] if backend.can_layer else [])] if backend.has_cache else []
    plain = [*([READOUT_ONLY] if readout_unchecked(adapter, [0]) else []), BATCHED_ROWS, WIDENED_ROWS,
             *([] if adapter.readout_refusal else [LENS_ROW])]
    return [c.verdict(adapter, backend, force=force) for c in cached] + [c.verdict(adapter, force=force) for c in plain]


__all__ = [
    "batched_verified", "cache_verified", "cut_verified", "forget_probes", "layered_verified", "left_padding_verified",
    "lens_row_verdict",
    "readout_verified", "run_all", "widening_verified",
]
