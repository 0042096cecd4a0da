"""Cutting a streamed corpus into model batches that respect the context length.

Two ways, `packing=`:

- `"pack"`: the token stream `EOS doc EOS doc ...` cut into rows of exactly `seq_len`
  tokens (the last row may be shorter, and then forms its own batch), as tuned-lens and most
  corpus evaluations do. Every position is real.
- `"pad"`: one document per row (BOS first when the tokenizer has one), documents longer
  than `seq_len` split into `seq_len` windows, rows padded to the batch's longest. With
  `padding_side="right"` the pads follow the text and a causal model never lets them reach
  a real token; with `"left"` the batch carries the attention mask and position ids that
  make each row equal to its unpadded run (checked at run time by the jobs that pad).

A CorpusBatch says which positions are real (`mask`) and which have a real next token
(`predicted`), so statistics count each real token exactly once.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ..bos import with_bos
from ..errors import OptionError
from ..lens.token_stream import documents, token_chunks
from ..validation import check_choice, check_int

Packing = Literal["pack", "pad"]
PACKINGS = ("pack", "pad")
PaddingSide = Literal["right", "left"]
PADDING_SIDES = ("right", "left")


@dataclass(frozen=True, kw_only=True, eq=False)
class CorpusBatch:
    """[batch, pos] token ids with the masks that say which positions count."""

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]  # real tokens (False at pads)
    padding_side: PaddingSide = "right"

    @property
    def predicted(self) -> Bool[Tensor, "batch pos"]:
        """Positions whose next token is real: where next-token losses are scored."""
        out = torch.zeros_like(self.mask)
        out[:, :-1] = self.mask[:, :-1] & self.mask[:, 1:]
        return out

    @property
    def next_tokens(self) -> Int[Tensor, "batch pos"]:
        """The token after each position (the last position repeats itself; see `predicted`)."""
        return torch.cat([self.tokens[:, 1:], self.tokens[:, -1:]], dim=1)

    @property
    def position_ids(self) -> Int[Tensor, "batch pos"]:
        """Each token's position in its own row's text (pads at 0)."""
        return (self.mask.long().cumsum(1) - 1).clamp_(min=0)

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens in the batch."""
        return int(self.mask.sum())

    def digest(self) -> bytes:
        """A fingerprint of this batch's tokens and masks (checkpoints and rank agreement)."""
        h = hashlib.sha256(self.tokens.cpu().numpy().tobytes())
        h.update(self.mask.cpu().numpy().tobytes())
        return h.digest()


def check_batching(*, packing: Packing, padding_side: PaddingSide, seq_len: int | None, batch_size: int | None,
                   max_tokens: int | None, n_ctx: int) -> None:
    """Raise OptionError for any batching option outside its valid range."""
    check_choice("packing", packing, PACKINGS)
    check_choice("padding_side", padding_side, PADDING_SIDES)
    check_int("seq_len", seq_len, low=2, high=n_ctx, allow_none=True)
    check_int("batch_size", batch_size, low=1, allow_none=True)
    check_int("max_tokens", max_tokens, low=1, allow_none=True)
    if padding_side == "left" and packing != "pad":
        raise OptionError("padding_side='left' needs packing='pad' (packed rows have no padding).")


def corpus_batches(adapter, corpus, *, packing: Packing = "pack", seq_len: int, batch_size: int,
                   max_tokens: int | None = None, padding_side: PaddingSide = "right", text_key: str = "text",
                   shuffle_buffer: int = 0, seed: int = 0) -> Iterator[CorpusBatch]:
    """Stream the corpus as CorpusBatches of at most `batch_size` rows and `max_tokens` real tokens."""
    if packing == "pack":
        rows = token_chunks(adapter, corpus, seq_len=seq_len, drop_last=False, text_key=text_key,
                            shuffle_buffer=shuffle_buffer, seed=seed)
    else:
        rows = _document_rows(adapter, corpus, seq_len, text_key)
    yield from _batched(_capped(rows, max_tokens), batch_size, adapter.pad_token_id, padding_side,
                        same_length=packing == "pack")


def _document_rows(adapter, corpus, seq_len: int, text_key: str) -> Iterator[Tensor]:
    """Each document's ids (BOS first when there is one), split into windows of `seq_len`."""
    bos = adapter.bos_token_id
    for doc in documents(corpus, text_key=text_key):
        ids = adapter.tokenizer.encode(doc, add_special_tokens=False)
        if not ids:
            continue
        ids = with_bos(ids, bos)
        for start in range(0, len(ids), seq_len):
            yield torch.tensor(ids[start:start + seq_len], dtype=torch.long)


def _capped(rows: Iterator[Tensor], max_tokens: int | None) -> Iterator[Tensor]:
    seen = 0
    for row in rows:
        if max_tokens is not None:
            row = row[: max_tokens - seen]
        if len(row):
            yield row
        seen += len(row)
        if max_tokens is not None and seen >= max_tokens:
            return


def _batched(rows: Iterator[Tensor], size: int, pad: int, side: PaddingSide, *, same_length: bool) -> Iterator[CorpusBatch]:
    buffer: list[Tensor] = []
    for row in rows:
        if buffer and (len(buffer) == size or (same_length and len(row) != len(buffer[0]))):
            yield _padded(buffer, pad, side)
            buffer = []
        buffer.append(row)
    if buffer:
        yield _padded(buffer, pad, side)


def _padded(rows: list[Tensor], pad: int, side: PaddingSide) -> CorpusBatch:
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, row in enumerate(rows):
        cut = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        tokens[b, cut], mask[b, cut] = row, True
    return CorpusBatch(tokens=tokens, mask=mask, padding_side=side)


__all__ = ["PACKINGS", "PADDING_SIDES", "CorpusBatch", "check_batching", "corpus_batches"]
