"""The logit lens: residual streams decoded by the model's final norm and unembedding.

Compared with the final output or with the input, exactly, in bounded memory.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import metrics
from ..errors import OptionError, UnsupportedModelError
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.cache import cached_activation
from ..hooks.fast_paths import lens_row_verdict
from ..hooks.preserve import preserves_model
from ..hooks.sites import Site
from ..validation import check_bool, check_choice, check_int, read_prompt
from .result import LogitLensResult
from .translators import Readout, resolve_lens

CHUNK_BYTES = 256 * 2**20  # working memory for the [cells, d_vocab] temporaries of one chunk
_TEMPORARIES = 5  # float32 [cells, d_vocab] arrays alive at once: logits, 2 scratch, reference + its probs
_QUIET_STEPS = 4  # no progress bar for problems this small
_METRICS = ("kl", "rank", "prob", "entropy", "cross_entropy")
Compare = Literal["final", "input"]
COMPARES = ("final", "input")
Rows = Literal["blocks", "sublayers"]
ROWS = ("blocks", "sublayers")


@dataclass(frozen=True)
class _Row:
    label: str
    site: Site  # RESID_PRE (the embedding row), RESID_MID, RESID_POST, or LOGITS (the output)
    layer: int | None

    @property
    def lens_layer(self) -> int:
        """The layer of a lens row: every row but the model's output has one."""
        assert self.layer is not None  # narrowing: the output row is decoded by the model, not a lens
        return self.layer


def auto_chunk_size(d_vocab: int, n_cells: int) -> int:
    """Cells (row × position pairs) scored at once: as many as fit in CHUNK_BYTES."""
    return max(1, min(n_cells, CHUNK_BYTES // (_TEMPORARIES * 4 * d_vocab)))


def _rows(adapter: ModelAdapter, rows: str, layers) -> list[_Row]:
    n = adapter.n_layers
    if layers is None:
        chosen = list(range(n))
    else:
        layers = list(layers) if isinstance(layers, (list, tuple, range)) else [layers]
        chosen = sorted({adapter.check_layer(layer, what="layers entry") for layer in layers})
    out = [_Row("embed", Site.RESID_PRE, 0)]
    for layer in chosen:
        if rows == "sublayers":
            out.append(_Row(f"{layer} attn", Site.RESID_MID, layer))
        if layer < n - 1:
            out.append(_Row(f"{layer} mlp" if rows == "sublayers" else str(layer), Site.RESID_POST, layer))
    out.append(_Row("output", Site.LOGITS, None))
    return out


def _positions(positions, width: int) -> list[int]:
    if positions is None:
        return list(range(width))
    if isinstance(positions, slice):
        chosen = list(range(width))[positions]
    else:
        items = list(positions) if isinstance(positions, (list, tuple, range)) else [positions]
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in items):
            raise OptionError(f"positions must be None, an int, a slice or a list of ints; got {positions!r}.")
        bad = [p for p in items if not -width <= p < width]
        if bad:
            raise OptionError(
                f"positions {bad} are out of range for a prompt of {width} tokens (valid: 0..{width - 1})."
            )
        chosen = sorted({p % width for p in items})
    if not chosen:
        raise OptionError(
            f"positions={positions!r} selects no position of a {width}-token prompt (valid: 0..{width - 1} or -{width}..-1)."
        )
    return chosen


def _plan(n_rows: int, n_cells: int, size: int) -> list[tuple[slice, list[int]]]:
    """(cell range, rows) steps of at most `size` cells each, position chunks outermost.

    Lens rows are grouped; the output row (the last) is always a step of its own, since
    its logits come from the model rather than from the lens.
    """
    if n_cells == 0:
        return []
    per_step = min(n_cells, size)
    group = max(1, size // per_step)
    lens_rows = list(range(n_rows - 1))
    steps = []
    for start in range(0, n_cells, per_step):
        cells = slice(start, min(n_cells, start + per_step))
        steps += [(cells, lens_rows[i : i + group]) for i in range(0, len(lens_rows), group)]
        steps.append((cells, [n_rows - 1]))
    return steps


def _activations(adapter, tokens, rows, cache) -> tuple[dict[tuple[Site, int], Tensor], Tensor]:
    """Residual streams of every lens row and the model's logits."""
    keys = [(row.site, row.layer) for row in rows if row.site is not Site.LOGITS]
    last = (Site.RESID_POST, adapter.n_layers - 1)
    if cache is None:
        run = adapter.run(tokens, capture=keys, need_logits=True)
        return {key: _batch_pos(run[key], tokens, key, cached=False) for key in keys}, run.logits
    acts = {key: _batch_pos(cached_activation(cache, *key), tokens, key, cached=True) for key in [*keys, last]}
    # The output row is the lens on the final residual, which is exactly the model's logits.
    return acts, adapter.lens_logits(acts[last].to(adapter.device))


def _batch_pos(act: Tensor, tokens: Tensor, key, *, cached: bool) -> Tensor:
    """`act` as [batch, pos, d]; the model's [batch·pos, d] (a flattened region) is unflattened.

    Raises OptionError for a user's cache of another prompt, UnsupportedModelError when
    the model's own activation does not hold one vector per token.
    """
    batch, pos = tokens.shape
    if act.ndim == 3 and tuple(act.shape[:2]) == (batch, pos):
        return act
    if not cached and act.ndim == 2 and act.shape[0] == batch * pos:
        return act.reshape(batch, pos, act.shape[-1])
    what = (
        f"The {key[0].value} of layer {key[1]} has shape {tuple(act.shape)}, "
        f"not one vector per token of the {tuple(tokens.shape)} prompt"
    )
    if cached:
        raise OptionError(f"{what}; cache the same prompt.")
    raise UnsupportedModelError(f"{what}, so the logit lens cannot decode it on this architecture.")


@preserves_model
def logit_lens(
    model,
    prompt,
    /,
    *,
    compare: Compare = "final",
    rows: Rows = "blocks",
    layers: "int | Sequence[int] | None" = None,
    positions: "int | slice | Sequence[int] | None" = None,
    top_k: int = 5,
    lens="logit",
    cache=None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> LogitLensResult:
    """Decode every residual stream with the model's final norm and unembedding.

    Rows: the embedding (resid_pre of block 0), each block's resid_post (and resid_mid with
    `rows="sublayers"`) and the model's output; the final norm's statistics are recomputed on
    each row. Metrics are float32 and exact, at most `chunk_size` cells decoded at once.

    Args:
        model: a TransformerLens model; hooks the user attached around the call stay active.
        prompt: a string, a list of strings (right-padded batch) or token ids.
        compare: "final" — KL(final ‖ row), rank/prob of the final top-1 token; "input" —
            KL(input ‖ row) against the embedding row, rank/prob of the input token.
        rows: "blocks" or "sublayers" (attention and MLP steps separately).
        layers: blocks whose rows to include (negative allowed); default all.
        positions: an int, slice or list of positions to score; default all.
        top_k: how many top tokens per cell to keep.
        lens: "logit" (the identity), a li.TunedLens, a TransformerLens JacobianLens, or a
            callable fn(resid, hook_name) -> resid applied to each row before decoding; rows
            it has no translator for are decoded with the identity (see `row_lenses`).
        cache: a precomputed ActivationCache of this prompt holding the residual streams.
        chunk_size: cells scored at once; default from CHUNK_BYTES and the vocabulary.
        progress: show a tqdm bar (only when there are more than a few chunks).

    Returns:
        LogitLensResult with [rows, pos] metrics ([batch, rows, pos] for a list).

    Examples:
        >>> li.logit_lens(model, "The sky is blue.", progress=False).row_labels[-1]
        'output'
    """
    check_choice("compare", compare, COMPARES)
    check_choice("rows", rows, ROWS)
    check_bool("progress", progress)
    adapter = adapter_for(model)
    check_int("top_k", top_k, low=1, high=adapter.d_vocab_out)
    check_int("chunk_size", chunk_size, low=1, allow_none=True)
    p = read_prompt(adapter, prompt)
    row_specs = _rows(adapter, rows, layers)
    cols = _positions(positions, p.pos)
    readout = resolve_lens(adapter, lens)
    row_lenses = _row_lenses(adapter, readout, row_specs)
    lens_row_verdict(adapter)  # recorded on the result; warns (or raises when strict) if the last row != logits
    with torch.no_grad():
        acts, logits = _activations(adapter, p.tokens, row_specs, cache)
        result = _score(adapter, p, row_specs, cols, acts, logits, compare, top_k, chunk_size, progress, readout)
    return replace(result, lens=readout.kind, row_lenses=row_lenses)


def _row_lenses(adapter: ModelAdapter, readout: Readout, row_specs: list[_Row]) -> list[str]:
    """Which lens decodes each row ("model" for the output row); refuses uncovered sub-layer rows."""
    probe = torch.zeros(1, adapter.d_model, device=adapter.device)
    kinds = [readout.apply(probe, row.site, row.lens_layer)[1] if row.site is not Site.LOGITS else "model"
             for row in row_specs]
    missing = [row.label for row, kind in zip(row_specs, kinds, strict=True)
               if row.site is Site.RESID_MID and kind != readout.kind]
    if missing:
        raise OptionError(
            f"This {readout.kind} lens has no translators for the sub-layer rows {missing}; use rows='blocks', "
            "or train a li.TunedLens with sublayers=True."
        )
    return kinds


class _Cells:
    """The scored (batch, position) cells of a prompt, flattened, and reads of [batch, pos, ...] at them."""

    def __init__(self, p, cols: list[int], device: torch.device):
        cols_t = torch.tensor(cols, device=device)
        self.cols, self.batch, self.device = cols, p.batch, device
        self.lengths = p.lengths.to(device)
        self.valid = cols_t[None, :] < self.lengths[:, None]  # [batch, cols]
        self.b_idx, self.c_idx = self.valid.nonzero(as_tuple=True)
        self.pos_idx = cols_t[self.c_idx]
        self.count = len(self.b_idx)
        self.contiguous = p.batch == 1 and cols == list(range(cols[0], cols[0] + len(cols)))

    def take(self, x: Tensor, cells: slice) -> Tensor:
        """x[batch, pos, ...] at the cells (a view, not a copy, for one contiguous prompt)."""
        if self.contiguous:
            return x[0, self.cols[0] + cells.start : self.cols[0] + cells.stop]
        return x[self.b_idx[cells], self.pos_idx[cells]]

    def at(self, x: Tensor) -> Tensor:
        """x[batch, pos] at every cell: [cells]."""
        return x[self.b_idx, self.pos_idx]

    def grid(self, flat: Tensor, fill, n_rows: int) -> Tensor:
        """[rows, cells, ...] -> [batch, rows, cols, ...], padding filled with `fill`."""
        shape = (self.batch, n_rows, len(self.cols), *flat.shape[2:])
        full = torch.full(shape, fill, dtype=flat.dtype, device=self.device)
        full[self.b_idx, :, self.c_idx] = flat.transpose(0, 1)
        return full


@dataclass(frozen=True)
class _Decoder:
    """Float32 vocabulary logits of lens rows (through the readout) and of the output row."""

    adapter: ModelAdapter
    readout: Readout
    row_specs: list[_Row]
    acts: dict
    logits: Tensor
    cells: _Cells

    def __call__(self, rows: list[int], cells: slice) -> Tensor:
        """[rows, cells, d_vocab] logits; the output row (the last) is always a step of its own."""
        if rows == [len(self.row_specs) - 1]:
            return self.cells.take(self.logits, cells).float()[None]
        keys = [(self.row_specs[r].site, self.row_specs[r].lens_layer) for r in rows]
        # Layers may live on different devices (device_map); decode where the head lives.
        device = self.logits.device
        resid = torch.stack([self.readout.apply(self.cells.take(self.acts[key].to(device), cells), *key)[0]
                             for key in keys])
        return self.adapter.lens_logits(resid).float()


class _Reference(NamedTuple):
    """The reference row's distribution at one cell range, for KL against every other row."""

    cells: slice
    centred: Tensor
    norm: metrics.Normalizer
    probs: Tensor


def _reference(z_ref: Tensor, cells: slice) -> _Reference:
    norm, _, centred = metrics.normalize(z_ref)
    centred.clamp_(min=torch.finfo(z_ref.dtype).min)
    return _Reference(cells, centred, norm, metrics.softmax(z_ref, norm))


def _scratch(work: Tensor | None, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Two scratch buffers shaped like `z`, reusing `work` when it is large enough."""
    if work is None or work.shape[1] < z.numel():
        work = torch.empty(2, z.numel(), dtype=z.dtype, device=z.device)
    w1, w2 = (buf[: z.numel()].view_as(z) for buf in work)
    return work, w1, w2


def _chunk_metrics(z: Tensor, ref: _Reference, tgt: Tensor, nx: Tensor, ref_index: int | None,
                   w1: Tensor, w2: Tensor) -> tuple[dict[str, Tensor], metrics.Normalizer]:
    """Every metric of _METRICS for [rows, cells] of logits `z`, and their normalizer (scratch overwritten)."""
    norm, ent, centred = metrics.normalize(z, (w1, w2))  # centred lives in w1
    kl = metrics.kl_from_centred(ref.probs, ref.centred, ref.norm, centred, norm, w2)
    if ref_index is not None:
        kl[ref_index] = 0.0  # the reference against itself, exactly
    return {
        "kl": kl,
        "rank": metrics.cell_rank(z, tgt, w2),
        "prob": norm.log_prob(metrics.token_logit(z, tgt)).exp(),
        "entropy": ent,
        "cross_entropy": (-norm.log_prob(metrics.token_logit(z, nx.clamp(min=0)))).masked_fill(nx < 0, float("nan")),
    }, norm


def _next_tokens(tokens: Tensor, lengths: Tensor) -> Tensor:
    """The token after each position, -1 past each prompt's last token."""
    nxt = torch.full_like(tokens, -1)
    nxt[:, :-1] = tokens[:, 1:]
    nxt[torch.arange(tokens.shape[1], device=tokens.device)[None, :] >= lengths[:, None] - 1] = -1
    return nxt


def _score(adapter, p, row_specs, cols, acts, logits, compare, top_k, chunk_size, progress, readout) -> LogitLensResult:
    device, n_rows = logits.device, len(row_specs)
    cells = _Cells(p, cols, device)
    tokens = p.tokens.to(device)
    final_top1 = logits.argmax(-1)  # [batch, pos]
    nxt = _next_tokens(tokens, cells.lengths)
    target, next_cells = cells.at(tokens if compare == "input" else final_top1), cells.at(nxt)
    decode = _Decoder(adapter, readout, row_specs, acts, logits, cells)
    out = {name: torch.full((n_rows, cells.count), float("nan"), device=device) for name in _METRICS}
    top_ids = torch.full((n_rows, cells.count, top_k), -1, dtype=torch.long, device=device)
    top_probs = torch.full((n_rows, cells.count, top_k), float("nan"), device=device)
    plan = _plan(n_rows, cells.count, chunk_size or auto_chunk_size(adapter.d_vocab_out, cells.count * n_rows))
    ref_row = 0 if compare == "input" else n_rows - 1
    work = ref = None  # two scratch buffers reused by every chunk; the reference of the current cells
    for span, rows in tqdm(plan, desc="logit lens", disable=not progress or len(plan) <= _QUIET_STEPS, leave=False):
        if ref is None or ref.cells != span:
            ref = _reference(decode([ref_row], span)[0], span)
        z = decode(rows, span)
        work, w1, w2 = _scratch(work, z)
        values, norm = _chunk_metrics(z, ref, target[span].expand(len(rows), -1), next_cells[span].expand(len(rows), -1),
                                      rows.index(ref_row) if ref_row in rows else None, w1, w2)
        for name, value in values.items():
            out[name][rows, span] = value
        top_ids[rows, span], top_probs[rows, span] = metrics.top_k(z, norm, top_k)

    def grid(flat: Tensor, fill) -> Tensor:
        return cells.grid(flat, fill, n_rows)

    return _result(adapter, p, row_specs, cols, compare, top_k, final_top1, nxt, cells.valid, grid, out, top_ids, top_probs)


def _result(adapter, p, row_specs, cols, compare, top_k, final_top1, nxt, valid, grid, out, top_ids, top_probs):
    pos_t = torch.tensor(cols, device=final_top1.device)
    tokens = p.tokens.to(final_top1.device)[:, pos_t]
    top1 = final_top1[:, pos_t].masked_fill(~valid, -1)
    next_tokens = nxt[:, pos_t].masked_fill(~valid, -1)
    target = (tokens if compare == "input" else top1).masked_fill(~valid, -1)
    fields = {name: grid(value, float("nan")) for name, value in out.items()}
    fields["top_tokens"] = grid(top_ids, -1)
    fields["top_probs"] = grid(top_probs, float("nan"))
    ids = {int(i) for t in (fields["top_tokens"], top1, next_tokens, target) for i in t.unique().tolist() if i >= 0}
    vocab = dict(zip(sorted(ids), adapter.token_strings(sorted(ids)), strict=True))
    str_tokens = [[s[c] if c < len(s) else "" for c in cols] for s in p.str_tokens]
    next_str = [[vocab.get(int(i), "") for i in row] for row in next_tokens.tolist()]
    tensors = dict(
        **fields,
        tokens=tokens,
        final_top1=top1,
        next_tokens=next_tokens,
        target_tokens=target,
        correct=(top1 == next_tokens) & (next_tokens >= 0),
        valid=valid,
    )
    tensors = {k: v.cpu() for k, v in tensors.items()}
    if not p.batched:
        tensors = {k: v[0] for k, v in tensors.items()}
        str_tokens, next_str = str_tokens[0], next_str[0]
    return LogitLensResult(
        **tensors,
        str_tokens=str_tokens,
        next_str_tokens=next_str,
        row_labels=[row.label for row in row_specs],
        row_sites=[(row.site.value, row.layer) for row in row_specs],
        positions=cols,
        compare=compare,
        top_k=top_k,
        batched=p.batched,
        vocab_strings=vocab,
    )


__all__ = ["auto_chunk_size", "logit_lens"]
