"""Batched occlusion: replace a window of tokens by a baseline and measure the change of O.

All variants run as batched forwards, `batch_size` variants at a time. The clean output
comes from the same code path with the unchanged prompt, so a variant that changes
nothing scores (numerically) zero.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .._typing import Tokens
from ..errors import OptionError
from ..hooks.adapter import ModelAdapter
from ..hooks.execution import PrefixState
from ..hooks.fast_paths import batched_verified
from ..validation import check_int
from .objective import Objective, widen

BASELINES = ("pad", "eos", "bos", "zero", "mean")
BaselineName = Literal["pad", "eos", "bos", "zero", "mean"]
# Default variants per forward: about this many token rows (variants × prompt length), so
# one forward's activations stay bounded whatever the prompt length.
TOKENS_PER_CHUNK = 2048
PREFIX_MIN_TOKENS = 32  # below this, "auto" runs full batched forwards (measured faster)


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """What an occluded position holds: a token id, or an embedding vector."""

    name: str
    token: int | None = None
    vector: Float[Tensor, " d_model"] | None = None


def resolve_baseline(adapter: ModelAdapter, baseline: "str | int") -> Baseline:
    """Turn "pad" | "eos" | "bos" | "zero" | "mean" | a token id into a Baseline."""
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        token = adapter.token_id(baseline)
        return Baseline(name=f"token {adapter.token_strings([token])[0]!r} (id {token})", token=token)
    if not isinstance(baseline, str) or baseline not in BASELINES:
        valid = ", ".join(repr(b) for b in BASELINES)
        raise OptionError(f"baseline={baseline!r} is not valid; choose one of: {valid}, or a token id.")
    if baseline in ("zero", "mean"):
        if baseline == "zero":
            vector = torch.zeros(adapter.d_model)
        else:  # the mean of every token's embedding-hook value
            vector = widen(adapter.token_embedding_rows(torch.arange(adapter.d_vocab, device=adapter.device))).mean(0)
        return Baseline(name=f"{baseline} embedding", vector=vector.to(adapter.device))
    tok = adapter.tokenizer
    attr = {"pad": "pad_token_id", "eos": "eos_token_id", "bos": "bos_token_id"}[baseline]
    special = adapter.pad_token_id if baseline == "pad" else getattr(tok, attr, None) if tok is not None else None
    if special is None:
        raise OptionError(f"baseline={baseline!r}: the model's tokenizer has no {attr}; give a token id instead.")
    return Baseline(name=f"{baseline} token {adapter.token_strings([special])[0]!r} (id {special})", token=int(special))


def windows_for(positions: list[int], window: int, n: int) -> list[tuple[int, int]]:
    """The [start, stop) spans occluded: one per attributed position, `window` tokens long."""
    check_int("window", window, low=1)
    return [(p, min(p + window, n)) for p in positions]


def spread_windows(
    values: Float[Tensor, "window row"], windows: list[tuple[int, int]], n: int
) -> Float[Tensor, "row pos"]:
    """Per-token scores: each token gets the mean score of the windows that cover it."""
    total = torch.zeros(values.shape[1], n, dtype=values.dtype)
    count = torch.zeros(n, dtype=values.dtype)
    for (start, stop), value in zip(windows, values, strict=True):
        total[:, start:stop] += value[:, None]
        count[start:stop] += 1
    return total / count.clamp(min=1)


def occluded_inputs(adapter: ModelAdapter, tokens: Tokens, position_sets: list[list[int]], baseline: Baseline):
    """Token ids [v, pos] and (for vector baselines) embeddings [v, pos, d] of the variants.

    Variant v has the positions `position_sets[v]` replaced by the baseline.
    """
    batch = tokens.expand(len(position_sets), -1).clone()
    if baseline.token is not None:
        for row, positions in enumerate(position_sets):
            batch[row, positions] = baseline.token
        return batch, None
    assert baseline.vector is not None  # narrowing: a Baseline holds a token or a vector
    embeds = adapter.embed(tokens).detach().to(adapter.dtype).expand(len(position_sets), -1, -1).clone()
    for row, positions in enumerate(position_sets):
        embeds[row, positions] = baseline.vector.to(embeds.dtype)
    return batch, embeds


def default_chunk(n_pos: int, rows: int = 1) -> int:
    """Variants per forward: about TOKENS_PER_CHUNK token rows (fewer when many output rows)."""
    return max(1, TOKENS_PER_CHUNK // (n_pos * max(1, rows // 16)))


def prefix_chunk(n_pos: int) -> int:
    """Variants per prefix group: about √n balances prefix runs against continuation length."""
    return max(1, round(n_pos**0.5))


@torch.no_grad()
def occlusion_values(
    adapter: ModelAdapter,
    tokens: Tokens,
    objective: Objective,
    *,
    spans: list[tuple[int, int]],
    baseline: Baseline,
    metric: str,
    batch_size: int | None,
    reuse: str = "auto",
    progress: bool,
) -> Float[Tensor, "window row"]:
    """The metric for every occluded span and output row.

    Occluding from position c changes nothing before c. Where the model has a key/value
    cache (HF-booted bridges, HookedTransformer) and `reuse` allows it ("auto": prompts of
    PREFIX_MIN_TOKENS or more), spans are sorted by start and grouped; the clean prefix is
    run once, up to the last group's start, and each group cuts its keys/values to its own
    first start and runs only the positions from there on. Otherwise every variant is a
    full forward, batched.
    """
    n = tokens.shape[1]
    clean = objective.clean(adapter, tokens)
    wanted = reuse == "cache" or (reuse == "auto" and n >= PREFIX_MIN_TOKENS)
    probe = PrefixState.build(adapter, tokens[:, :1], reuse=reuse) if spans and wanted else None
    cached = probe is not None and probe.cached
    if not batched_verified(adapter):
        batch_size = 1  # batched rows disagree with single rows on this model: one variant per forward
    size = batch_size or (
        min(prefix_chunk(n), default_chunk(n, len(objective.rows))) if cached else default_chunk(n, len(objective.rows))
    )
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    values = widen(torch.zeros(len(spans), len(objective.rows), dtype=clean[0].dtype))
    if cached:  # one clean prefix up to the last group's start; each group cuts it to its own start
        assert probe is not None  # narrowing: `cached` implies a probe
        last_start = max(spans[order[begin]][0] for begin in range(0, len(order), size))
        longest = probe if last_start <= probe.length else PrefixState.build(adapter, tokens[:, :last_start], reuse=reuse)
    for begin in tqdm(range(0, len(order), size), disable=not progress, desc="occlusion", leave=False):
        chosen = order[begin : begin + size]
        chunk = [spans[i] for i in chosen]
        batch, embeds = occluded_inputs(adapter, tokens, [list(range(a, b)) for a, b in chunk], baseline)
        if cached:
            start = chunk[0][0]
            prefix = longest.truncated(start)
            tail = None if embeds is None else embeds[:, start:]
            out = objective.outputs_after(prefix, batch[:, start:], tail, clean)
        else:
            out = objective.outputs(adapter, batch, embeds)
        values[chosen] = objective.metric(metric, clean[0], out).cpu().to(values.dtype)
    return values
