"""`li.corpus`: any per-batch statistic, reduced into exact totals over a whole corpus.

The runner streams the corpus into CorpusBatches (`batches.py`), hands this process's
share of them to the statistic, adds the sums and counts it returns (`totals.py`), and
under `torchrun` sums them over every process (`distributed.py`). The jobs
(`li.evaluate_lens`, `li.attribute_corpus`, `li.ablation_corpus`, `li.invert_corpus`)
are statistics on the same loop (`engine.py`).
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import OptionError
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.fast_paths import left_padding_verified
from ..hooks.preserve import preserves_model
from ..lens.token_stream import check_corpus
from ..validation import check_bool, check_destination, check_int, check_seed, check_text, validates_own_arguments
from .batches import CorpusBatch, Packing, PaddingSide, check_batching, corpus_batches
from .distributed import joined
from .engine import Loop, RunInfo, run_items

BATCH_BYTES = 128 * 2**20  # the float32 [rows, pos, d_vocab] logits of one batch stay below this


@validates_own_arguments  # built from raw user values, then checked
@dataclass(frozen=True, kw_only=True)
class CorpusOptions:
    """How a corpus is read into batches; part of every checkpoint's configuration."""

    packing: Packing = "pack"
    seq_len: int | None = None  # None: the model's context, at most 2048
    batch_size: int | None = None  # None: as many rows as keep one batch's logits under BATCH_BYTES
    max_tokens: int | None = None
    padding_side: PaddingSide = "right"
    shuffle_buffer: int = 0
    seed: int = 0
    text_key: str = "text"

    def check(self, adapter: ModelAdapter, corpus) -> None:
        """Raise OptionError for a bad option or corpus, before the model runs."""
        check_batching(packing=self.packing, padding_side=self.padding_side, seq_len=self.seq_len,
                       batch_size=self.batch_size, max_tokens=self.max_tokens, n_ctx=adapter.n_ctx)
        check_int("shuffle_buffer", self.shuffle_buffer, low=0)
        check_seed(self.seed, allow_none=False)
        check_text("text_key", self.text_key)
        check_corpus(corpus, text_key=self.text_key)

    def resolved(self, adapter: ModelAdapter) -> "CorpusOptions":
        """The options with `seq_len` (the context, at most 2048) and `batch_size` (under BATCH_BYTES) filled in."""
        seq_len = self.seq_len or min(adapter.n_ctx, 2048)
        rows = self.batch_size or max(1, BATCH_BYTES // (seq_len * adapter.d_vocab_out * 4))
        return CorpusOptions(**{**self.__dict__, "seq_len": seq_len, "batch_size": rows})

    def batches(self, adapter: ModelAdapter, corpus):
        """An iterator of the corpus's CorpusBatch batches under these options."""
        assert self.seq_len is not None and self.batch_size is not None  # narrowing: called on `resolved` options
        return corpus_batches(adapter, corpus, packing=self.packing, seq_len=self.seq_len,
                              batch_size=self.batch_size, max_tokens=self.max_tokens,
                              padding_side=self.padding_side, text_key=self.text_key,
                              shuffle_buffer=self.shuffle_buffer, seed=self.seed)


def check_run_options(*, checkpoint, checkpoint_every: int, progress: bool) -> Path | None:
    """The checkpoint path (None for none), after checking the loop's options."""
    check_int("checkpoint_every", checkpoint_every, low=1)
    check_bool("progress", progress)
    return None if checkpoint is None else check_destination(checkpoint, name="checkpoint", example="job.ckpt")


def run_batches(adapter: ModelAdapter, corpus, options: CorpusOptions, step: Callable[[CorpusBatch], Mapping], *,
                job: str, config: Mapping, checkpoint: Path | None, checkpoint_every: int, progress: bool):
    """Run `step` on every batch of the corpus (this process's share): the totals and RunInfo."""
    with joined(adapter.device) as world:
        loop = Loop(world=world, config={"job": job, **options.__dict__, **config}, checkpoint=checkpoint,
                    checkpoint_every=checkpoint_every, progress=progress, desc=job)
        return run_items(options.batches(adapter, corpus), step, loop=loop, digest_of=CorpusBatch.digest,
                         size_of=lambda b: b.n_tokens)


def run_batch(adapter: ModelAdapter, batch: CorpusBatch, *, capture=(), need_logits: bool = False):
    """The model on a batch: (capture, the batch as run).

    A left-padded batch runs with its mask and position ids only where the left-padding
    self-check passed; elsewhere it is re-padded on the right, where causality alone keeps
    pads away from real tokens.
    """
    tokens = batch.tokens.to(adapter.device)
    if batch.padding_side == "left":
        if left_padding_verified(adapter):
            return adapter.run_padded(tokens, attention_mask=batch.mask, position_ids=batch.position_ids,
                                      capture=capture, need_logits=need_logits), batch
        batch = right_padded(batch, adapter.pad_token_id)
        tokens = batch.tokens.to(adapter.device)
    return adapter.run(tokens, capture=capture, need_logits=need_logits), batch


def right_padded(batch: CorpusBatch, pad: int) -> CorpusBatch:
    """The same rows with their pads moved to the right."""
    tokens = torch.full_like(batch.tokens, pad)
    mask = torch.zeros_like(batch.mask)
    for b in range(batch.tokens.shape[0]):
        real = batch.tokens[b][batch.mask[b]]
        tokens[b, : len(real)], mask[b, : len(real)] = real, True
    return CorpusBatch(tokens=tokens, mask=mask, padding_side="right")


@dataclass(frozen=True, kw_only=True)
class CorpusTotals:
    """Exact corpus totals of a statistic: its sums and counts over every batch and process."""

    totals: dict[str, Tensor]
    run: RunInfo

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.totals:
            raise OptionError(f"No statistic named {name!r}; the statistic returned {sorted(self.totals)}.")
        return self.totals[name]

    def mean(self, name: str, *, per: str) -> Tensor:
        """totals[name] / totals[per]: a corpus mean, never an average of batch averages."""
        return self[name].double() / self[per].double()

    def to_dict(self) -> dict:
        """The totals as nested lists, with the run, for JSON."""
        return {"totals": {k: v.tolist() for k, v in self.totals.items()}, "run": self.run.to_dict()}

    def to_json(self, path=None) -> str:
        """The totals and run as JSON text; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            check_destination(path, name="path", example="totals.json").write_text(text)
        return text


@preserves_model
def corpus(model, corpus, statistic: Callable[[CorpusBatch], Mapping], *, packing: Packing = "pack",
           seq_len: int | None = None, batch_size: int | None = None, max_tokens: int | None = None,
           padding_side: PaddingSide = "right", shuffle_buffer: int = 0, seed: int = 0, text_key: str = "text",
           checkpoint=None, checkpoint_every: int = 50, progress: bool = True) -> CorpusTotals:
    """Stream `corpus` in batches, call `statistic(batch)` on each, and return the exact totals.

    `statistic` returns a dict of sums and counts for one CorpusBatch (numbers or tensors of a
    fixed shape: floats are summed in float64, integers in int64). Under `torchrun` each process
    takes every N-th batch and the totals are summed over processes; with `checkpoint=` an
    interrupted run resumes where it stopped and ends with the same totals.
    """
    adapter = adapter_for(model)
    if not callable(statistic):
        raise OptionError(f"statistic must be a callable fn(batch) -> dict of sums; got {type(statistic).__name__}.")
    options = CorpusOptions(packing=packing, seq_len=seq_len, batch_size=batch_size, max_tokens=max_tokens,
                            padding_side=padding_side, shuffle_buffer=shuffle_buffer, seed=seed, text_key=text_key)
    options.check(adapter, corpus)
    path = check_run_options(checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress)
    name = getattr(statistic, "__qualname__", type(statistic).__name__)
    totals, info = run_batches(adapter, corpus, options.resolved(adapter), statistic, job="corpus",
                               config={"statistic": name}, checkpoint=path, checkpoint_every=checkpoint_every,
                               progress=progress)
    return CorpusTotals(totals=dict(totals.values), run=info)


__all__ = ["BATCH_BYTES", "CorpusOptions", "CorpusTotals", "check_run_options", "corpus", "right_padded",
           "run_batch", "run_batches"]
