"""Evaluating a tuned lens: mean KL(final ‖ row) on held-out text, against the logit lens.

`evaluate_lens` reads a corpus in `seq_len` chunks (the last, shorter one included) and
scores every translated row with `metrics.kl_divergence` (the reference of the training loss's
fused KL), for the lens and for the logit lens on the same residuals; `HeldOutKL` holds the means.
"""

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from .. import metrics
from ..errors import OptionError
from ..hooks.adapter import adapter_for
from ..hooks.preserve import preserves_model
from ..validation import check_int
from .token_stream import token_chunks
from .tuned_training import MICRO_BATCH_BYTES, _residuals, row_label

if TYPE_CHECKING:
    from .tuned import TunedLens


@dataclass(frozen=True, kw_only=True)
class HeldOutKL:
    """Mean KL(final ‖ lens) in nats per translated row, for this lens and the logit lens."""

    rows: list[str]
    kl: list[float]
    logit_kl: list[float]
    tokens: int

    def to_dict(self) -> dict:
        """The fields in a plain dict, for JSON."""
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"{'row':>8} {'tuned':>8} {'logit':>8}"]
        lines += [f"{r:>8} {t:8.4f} {g:8.4f}" for r, t, g in zip(self.rows, self.kl, self.logit_kl, strict=True)]
        return "\n".join(lines + [f"({self.tokens} tokens)"])


@preserves_model
def evaluate_lens(model, lens: "TunedLens", corpus, *, seq_len: int | None = None, max_tokens: int | None = None,
                  micro_batch: int | None = None, text_key: str = "text") -> HeldOutKL:
    """Mean KL(final ‖ row) in nats per translated row, for `lens` and for the logit lens.

    The corpus is cut into `seq_len` chunks (the last, shorter one included) and read up to
    `max_tokens` tokens; every position of every chunk counts once.
    """
    adapter = adapter_for(model)
    check_int("seq_len", seq_len, low=1, high=adapter.n_ctx, allow_none=True)
    check_int("max_tokens", max_tokens, low=1, allow_none=True)
    check_int("micro_batch", micro_batch, low=1, allow_none=True)
    lens.check_model(adapter)
    seq_len = seq_len or min(adapter.n_ctx, 2048)
    micro = micro_batch or max(1, MICRO_BATCH_BYTES // (seq_len * adapter.d_vocab_out * 4))
    keys = lens.row_keys()
    sums = torch.zeros(2, len(keys), dtype=torch.float64)
    tokens = 0
    for batch in _eval_batches(adapter, corpus, seq_len, micro, max_tokens, text_key):
        acts, logits = _residuals(adapter, lens, batch.to(adapter.device))
        with torch.no_grad():
            final = metrics.log_probs(logits)  # log-softmax is idempotent: computed once, not per row
            for i, key in enumerate(keys):
                translated = lens.translator_for(acts[key], *key)
                assert translated is not None  # narrowing: row_keys() lists the rows that have a translator
                tuned = adapter.lens_logits(translated)
                sums[0, i] += float(metrics.kl_divergence(final, tuned).sum())
                sums[1, i] += float(metrics.kl_divergence(final, adapter.lens_logits(acts[key])).sum())
        tokens += batch.numel()
    if tokens == 0:
        raise OptionError("The held-out corpus holds no tokens; give at least one non-empty text.")
    mean = (sums / tokens).tolist()
    return HeldOutKL(rows=[row_label(s, layer, sublayers=lens.has_sublayers) for s, layer in keys],
                     kl=mean[0], logit_kl=mean[1], tokens=tokens)


def _eval_batches(adapter, corpus, seq_len: int, micro: int, max_tokens: int | None, text_key: str):
    """Batches of equal-length chunks, up to `max_tokens` tokens (the last chunk cut to fit)."""
    buffer: list[torch.Tensor] = []
    seen = 0
    for chunk in token_chunks(adapter, corpus, seq_len=seq_len, drop_last=False, text_key=text_key):
        if max_tokens is not None:
            chunk = chunk[: max_tokens - seen]
        if buffer and (len(buffer) == micro or len(chunk) != len(buffer[0])):
            yield torch.stack(buffer)
            buffer = []
        if len(chunk):
            buffer.append(chunk)
        seen += len(chunk)
        if max_tokens is not None and seen >= max_tokens:
            break
    if buffer:
        yield torch.stack(buffer)


__all__ = ["HeldOutKL", "evaluate_lens"]
