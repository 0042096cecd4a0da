"""`li.evaluate_lens`: per-layer statistics of one or more lenses over a whole corpus.

For every lens and every row (the embedding, each block's output, and the model's output),
summed over every real token of the corpus:

- KL(final ‖ lens) and the lens's entropy, in nats;
- whether the lens's top token is the model's (top-1 agreement);
- the cross-entropy against the true next token, at positions whose next token is real,
  and bits per byte: Σ cross-entropy / ln 2 / Σ bytes of those next tokens (`token_bytes`).

The model runs once per batch; each row's residuals are decoded in blocks of cells small
enough that no [rows × tokens × vocabulary] array exists, only [cells × vocabulary] for one
row at a time. The output row is the model's own logits.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import metrics
from ..errors import OptionError
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.preserve import preserves_model
from ..hooks.selfcheck import recording
from ..hooks.sites import Site
from ..lens.translators import Readout, resolve_lens
from .batches import CorpusBatch, Packing, PaddingSide
from .lens_eval_result import LensEvaluation
from .runner import CorpusOptions, check_run_options, run_batch, run_batches
from .token_bytes import token_byte_lengths

CELL_BYTES = 16 * 2**20  # one [cells, d_vocab] float32 block of decoded logits


@dataclass(frozen=True)
class _Row:
    label: str
    site: Site
    layer: int | None  # None: the model's output

    @property
    def lens_layer(self) -> int:
        """The layer of a lens row: every row but the model's output has one."""
        assert self.layer is not None  # narrowing: the output row is decoded by the model, not a lens
        return self.layer


def lens_rows(adapter: ModelAdapter) -> list[_Row]:
    """embed, 0 .. n_layers − 2, output: the logit lens's rows."""
    rows = [_Row("embed", Site.RESID_PRE, 0)]
    rows += [_Row(str(layer), Site.RESID_POST, layer) for layer in range(adapter.n_layers - 1)]
    return rows + [_Row("output", Site.LOGITS, None)]


def lens_names(readouts: Sequence[Readout]) -> list[str]:
    """Each lens's kind, numbered when a kind repeats ("tuned", "tuned 2")."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for readout in readouts:
        seen[readout.kind] = seen.get(readout.kind, 0) + 1
        names.append(readout.kind if seen[readout.kind] == 1 else f"{readout.kind} {seen[readout.kind]}")
    return names


class _Scorer:
    """The per-batch statistic: every lens × row sum for one CorpusBatch."""

    def __init__(self, adapter: ModelAdapter, readouts: list[Readout], rows: list[_Row], byte_lengths: Tensor):
        self.adapter, self.readouts, self.rows = adapter, readouts, rows
        self.byte_lengths = byte_lengths
        self.capture = [(r.site, r.layer) for r in rows if r.site is not Site.LOGITS]
        self.block = max(1, CELL_BYTES // (4 * adapter.d_vocab_out))
        self._row_kinds: dict[tuple, str] = {}

    def __call__(self, batch: CorpusBatch) -> dict[str, Tensor]:
        with torch.no_grad():
            run, batch = run_batch(self.adapter, batch, capture=self.capture, need_logits=True)
            real = batch.mask.reshape(-1).to(self.adapter.device)
            acts = {k: run[k].reshape(-1, run[k].shape[-1])[real] for k in self.capture}
            final = run.logits.reshape(-1, run.logits.shape[-1])[real]
            nxt = batch.next_tokens.reshape(-1)[batch.mask.reshape(-1)].to(final.device)
            scored = batch.predicted.reshape(-1)[batch.mask.reshape(-1)].to(final.device)
            sums = self._empty()
            for start in range(0, final.shape[0], self.block):
                cut = slice(start, start + self.block)
                self._add_block(sums, final[cut], {k: v[cut] for k, v in acts.items()}, nxt[cut], scored[cut])
        sums["tokens"] = torch.tensor(int(real.sum()))
        sums["predicted"] = torch.tensor(int(scored.sum()))
        sums["bytes"] = self.byte_lengths[nxt[scored].cpu()].sum()
        return sums

    def _empty(self) -> dict[str, Tensor]:
        shape = (len(self.readouts), len(self.rows))
        out = {k: torch.zeros(shape, dtype=torch.float64) for k in ("kl", "entropy", "cross_entropy")}
        out["top1"] = torch.zeros(shape, dtype=torch.int64)
        return out

    def _add_block(self, sums, final: Tensor, acts: dict, nxt: Tensor, scored: Tensor) -> None:
        """Add one block of cells' sums.

        The output row (the reference itself) and rows that several lenses decode alike by
        the identity are computed once.
        """
        ref = _Decoded(final.float())
        p = metrics.softmax(ref.z, ref.norm)
        ref_cross = metrics.expectation(p, ref.centred)  # Σ p (z_ref − m_ref), per cell
        done: dict[tuple, tuple[float, float, float, int]] = {}
        for i, readout in enumerate(self.readouts):
            for j, row in enumerate(self.rows):
                key = self._sharing_key(readout, row)
                if key not in done:
                    cells = ref if row.site is Site.LOGITS else _Decoded(self._decoded(readout, row, acts[key[1:]]))
                    done[key] = cells.sums(p, ref_cross, ref, nxt, scored)
                kl, entropy, ce, top1 = done[key]
                sums["kl"][i, j] += kl
                sums["entropy"][i, j] += entropy
                sums["cross_entropy"][i, j] += ce
                sums["top1"][i, j] += top1

    def _sharing_key(self, readout: Readout, row: _Row) -> tuple:
        """Equal keys decode equal logits: the output row, and identity rows of any lens."""
        if row.site is Site.LOGITS:
            return ("output", row.site, row.layer)
        kind = self._row_kinds.get((id(readout), row.site, row.layer))
        if kind is None:
            kind = self._row_kinds[(id(readout), row.site, row.layer)] = _probe_kind(readout, row, self.adapter.d_model)
        return (("logit",) if kind == "logit" else (id(readout),)) + (row.site, row.layer)

    def _decoded(self, readout: Readout, row: _Row, resid: Tensor) -> Tensor:
        translated, _ = readout.apply(resid[None], row.site, row.lens_layer)
        return self.adapter.lens_logits(translated)[0].float()


class _Decoded:
    """One row's logits for a block of cells, normalised once (max, log-normaliser, entropy)."""

    def __init__(self, z: Tensor) -> None:
        self.top, self.z = z.max(-1), z
        self.norm, self.entropy, self.centred = metrics.normalize(z)

    def sums(self, p: Tensor, ref_cross: Tensor, ref: "_Decoded", nxt: Tensor, scored: Tensor):
        """(Σ KL(ref ‖ self), Σ entropy, Σ next-token cross-entropy, top-1 agreements) over the cells.

        KL = Σ p (z_ref − m_ref) − Σ p (z − m) − log s_ref + log s, on centred logits so that
        large logit offsets lose no precision.
        """
        if self is ref:
            kl = 0.0
        else:
            cross = metrics.expectation(p, self.centred)
            kl = float((ref_cross - cross + (self.norm.log_s - ref.norm.log_s)).clamp_min(0.0).double().sum())
        log_q = self.norm.log_prob(metrics.token_logit(self.z, nxt))
        top1 = int((self.top.indices == ref.top.indices).sum())
        return kl, float(self.entropy.double().sum()), -float(log_q[scored].double().sum()), top1


def _probe_kind(readout: Readout, row: _Row, d_model: int) -> str:
    """What decodes `row` under `readout`: its own kind, or "logit" where it has no translator."""
    return readout.apply(torch.zeros(1, 1, d_model), row.site, row.lens_layer)[1]


def _row_lenses(readouts: list[Readout], rows: list[_Row], d_model: int) -> list[list[str]]:
    """Which lens decoded each [lens, row] ("logit" where a trained lens has no translator, "model" for output)."""
    return [["model" if r.site is Site.LOGITS else _probe_kind(readout, r, d_model) for r in rows]
            for readout in readouts]


@preserves_model
def evaluate_lens(model, corpus, *, lenses: Sequence = ("logit",), packing: Packing = "pack", seq_len: int | None = None,
                  batch_size: int | None = None, max_tokens: int | None = None, padding_side: PaddingSide = "right",
                  shuffle_buffer: int = 0, seed: int = 0, text_key: str = "text", checkpoint=None,
                  checkpoint_every: int = 50, progress: bool = True) -> LensEvaluation:
    """Per-layer KL, cross-entropy, bits per byte, entropy and top-1 agreement of each lens over a corpus.

    `lenses` lists "logit", li.TunedLens, TransformerLens JacobianLens objects or callables
    (as `li.logit_lens(lens=...)` takes them). Every statistic is a corpus total divided by
    its count. Under `torchrun` the batches are shared between processes and the totals
    summed; with `checkpoint=` an interrupted run resumes and ends with the same result.
    """
    adapter = adapter_for(model)
    adapter.check_lens_readout()
    if isinstance(lenses, (str, bytes)) or not isinstance(lenses, Sequence) or not lenses:
        raise OptionError(f"lenses must be a non-empty list, e.g. ['logit', li.load_lens('tiny')]; got {lenses!r}.")
    readouts = [resolve_lens(adapter, lens) for lens in lenses]
    options = CorpusOptions(packing=packing, seq_len=seq_len, batch_size=batch_size, max_tokens=max_tokens,
                            padding_side=padding_side, shuffle_buffer=shuffle_buffer, seed=seed, text_key=text_key)
    options.check(adapter, corpus)
    path = check_run_options(checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress)
    if adapter.tokenizer is None:
        raise OptionError("The model has no tokenizer, so it cannot read a text corpus; attach one to the model.")
    byte_lengths, bytes_method = token_byte_lengths(adapter.tokenizer, adapter.d_vocab_out)
    rows = lens_rows(adapter)
    names = lens_names(readouts)
    scorer = _Scorer(adapter, readouts, rows, byte_lengths)
    with recording() as verdicts:
        totals, info = run_batches(adapter, corpus, options.resolved(adapter), scorer, job="evaluate_lens",
                                   config={"lenses": names}, checkpoint=path, checkpoint_every=checkpoint_every,
                                   progress=progress)
    if not totals.values or int(totals["tokens"]) == 0:
        raise OptionError("The corpus holds no tokens; give at least one non-empty text.")
    return _result(totals, info, names, rows, _row_lenses(readouts, rows, adapter.d_model), bytes_method, verdicts)


def _result(totals, info, names, rows, row_lenses, bytes_method, verdicts) -> LensEvaluation:
    tokens, predicted, n_bytes = (int(totals[k]) for k in ("tokens", "predicted", "bytes"))
    ce = totals["cross_entropy"]
    return LensEvaluation(
        lenses=names, rows=[r.label for r in rows], row_lenses=row_lenses,
        kl=totals["kl"] / tokens, entropy=totals["entropy"] / tokens,
        top1_agreement=totals["top1"].double() / tokens,
        cross_entropy=ce / max(predicted, 1),
        bits_per_byte=ce / math.log(2) / n_bytes if n_bytes else torch.full_like(ce, float("nan")),
        tokens=tokens, predicted=predicted, bytes=n_bytes, bytes_method=bytes_method, run=info,
        checks=list({v.name: v for v in verdicts}.values()),
    )


__all__ = ["evaluate_lens", "lens_names", "lens_rows"]
