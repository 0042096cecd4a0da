"""Token-set trajectories: how probable a few chosen tokens are at every lens row.

For the "which language does the model think in" studies (Wendler et al. 2024): the
probability and rank of each token of a set (" Paris", " París", " 巴黎") and the set's
total probability, per row × position, read through any lens. Only the [cells, n_tokens]
values are kept; at most one chunk of one row's vocabulary-sized logits exists at once.
"""

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import metrics
from ..errors import OptionError
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.fast_paths import lens_row_verdict
from ..hooks.preserve import preserves_model
from ..hooks.sites import Site
from ..validation import check_bool, check_choice, check_int, read_prompt
from .logit_lens import _QUIET_STEPS, ROWS, Rows, _activations, _positions, _row_lenses, _rows, auto_chunk_size
from .trajectory_result import TokenTrajectoryResult
from .translators import resolve_lens

MULTI_TOKEN = ("error", "first")


@dataclass(frozen=True)
class _TokenSet:
    inputs: list  # as the user gave them
    ids: list[int]  # what is scored, one per input
    truncated: list[bool]  # a multi-token string scored by its first piece


def _token_set(adapter: ModelAdapter, tokens, multi_token: str) -> _TokenSet:
    """Parse `tokens` (strings and/or ids) into one scored id per entry; OptionError on bad entries."""
    if isinstance(tokens, Tensor) and tokens.ndim == 1 and not tokens.is_floating_point() and tokens.dtype != torch.bool:
        tokens = tokens.tolist()
    if not isinstance(tokens, (list, tuple)):
        hint = f" (write [{tokens!r}] for one token)" if isinstance(tokens, (str, int)) else ""
        raise OptionError(
            "tokens must be a non-empty list of strings and/or token ids, such as [' Paris', ' London']; "
            f"got {type(tokens).__name__} {tokens!r}{hint}."
        )
    if not tokens:
        raise OptionError("tokens is empty; give at least one string or token id, such as [' Paris'].")
    parsed = [_one_token(adapter, t, multi_token) for t in tokens]
    return _TokenSet(inputs=list(tokens), ids=[i for i, _ in parsed], truncated=[cut for _, cut in parsed])


def _one_token(adapter: ModelAdapter, token, multi_token: str) -> tuple[int, bool]:
    n = adapter.d_vocab_out
    if isinstance(token, str):
        return _string_token(adapter, token, multi_token)
    try:
        if isinstance(token, bool):
            raise TypeError
        token_id = operator.index(token)
    except TypeError:
        raise OptionError(
            f"Each entry of tokens must be a string or an integer token id; got {type(token).__name__} {token!r}."
        ) from None
    if not 0 <= token_id < n:
        raise OptionError(f"Token id {token_id} is outside the model's vocabulary; valid ids are 0..{n - 1}.")
    return token_id, False


def _string_token(adapter: ModelAdapter, text: str, multi_token: str) -> tuple[int, bool]:
    if adapter.tokenizer is None:
        raise OptionError(f"The model has no tokenizer, so {text!r} cannot be encoded; give token ids instead.")
    ids = adapter.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise OptionError(f"{text!r} encodes to no token; give a non-empty string or a token id.")
    if len(ids) > 1 and multi_token == "error":
        raise OptionError(
            f"{text!r} is not one token: it splits into {len(ids)} pieces {adapter.token_strings(ids)} (ids {ids}); "
            "give a single-token string or id, or multi_token='first' to score its first piece."
        )
    if not 0 <= ids[0] < adapter.d_vocab_out:
        raise OptionError(f"{text!r} encodes to id {ids[0]}, outside the model's output vocabulary "
                          f"0..{adapter.d_vocab_out - 1}.")
    return int(ids[0]), len(ids) > 1


def _gather(z: Tensor, ids: Tensor, work: Tensor) -> tuple[Tensor, Tensor]:
    """Probability and rank [cells, n] of each id in float32 logits z [cells, d_vocab] (work: z's shape)."""
    m = z.amax(-1, keepdim=True)
    log_s = torch.sub(z, m, out=work).exp_().sum(-1, keepdim=True).log()
    prob = metrics.Normalizer(m, log_s).log_prob(z[:, ids]).exp()
    rank = torch.stack([metrics.cell_rank(z, ids[j].expand(z.shape[0]), work) for j in range(len(ids))], -1)
    return prob, rank


@preserves_model
def token_trajectory(
    model,
    prompt,
    /,
    *,
    tokens: "Sequence[str | int]",
    lens="logit",
    multi_token: Literal["error", "first"] = "error",
    rows: Rows = "blocks",
    layers: "int | Sequence[int] | None" = None,
    positions: "int | slice | Sequence[int] | None" = None,
    cache=None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> TokenTrajectoryResult:
    """Probability and rank of each token of a set, and the set's total, at every lens row.

    Rows and positions are those of `li.logit_lens`; each row is decoded through `lens`, the
    final norm and the unembedding, and only the chosen tokens' values are kept.

    Args:
        model: a TransformerLens model (bridge or HookedTransformer).
        prompt: a string, a list of strings (right-padded batch) or token ids.
        tokens: strings (each one token, without BOS) and/or token ids. Duplicate ids
            are scored once in the set's total.
        lens: "logit", a li.TunedLens, a TransformerLens JacobianLens, or a callable
            fn(resid, hook_name) -> resid (see `li.logit_lens`).
        multi_token: "error" refuses a string that splits into several tokens; "first" scores
            its first piece (as the multilingual studies do) and records it in `truncated`.
        rows: "blocks" or "sublayers" (attention and MLP steps separately), as in `li.logit_lens`.
        layers: blocks whose rows to include (negative allowed); default all.
        positions: an int, slice or list of positions to score; default all.
        cache: a precomputed ActivationCache of this prompt holding the residual streams.
        chunk_size: cells decoded at once; default from the vocabulary size.
        progress: show a tqdm bar (only when there are more than a few chunks).

    Returns:
        TokenTrajectoryResult with prob/rank [row, pos, token] and set_prob/set_rank
        [row, pos] (a leading batch dim for a list of prompts).

    Examples:
        >>> li.token_trajectory(model, "The grass is", tokens=[" green", " blue"], progress=False).prob.shape
        torch.Size([5, 4, 2])
    """
    check_choice("multi_token", multi_token, MULTI_TOKEN)
    check_choice("rows", rows, ROWS)
    check_bool("progress", progress)
    check_int("chunk_size", chunk_size, low=1, allow_none=True)
    adapter = adapter_for(model)
    token_set = _token_set(adapter, tokens, multi_token)
    p = read_prompt(adapter, prompt)
    row_specs = _rows(adapter, rows, layers)
    cols = _positions(positions, p.pos)
    readout = resolve_lens(adapter, lens)
    row_lenses = _row_lenses(adapter, readout, row_specs)
    lens_row_verdict(adapter)  # the output row's logits equal the lens on the last residual
    with torch.no_grad():
        acts, logits = _activations(adapter, p.tokens, row_specs, cache)
        grid = _score(adapter, p, row_specs, cols, acts, logits, token_set, readout, chunk_size, progress)
    return _result(adapter, p, row_specs, row_lenses, readout.kind, cols, token_set, grid)


def _score(adapter, p, row_specs, cols, acts, logits, token_set, readout, chunk_size, progress) -> dict[str, Tensor]:
    """prob/rank [batch, row, col, token] and set_prob/set_rank [batch, row, col]; NaN on padding."""
    device = logits.device
    cols_t = torch.tensor(cols, device=device)
    valid = cols_t[None, :] < p.lengths.to(device)[:, None]  # [batch, cols]
    b_idx, c_idx = valid.nonzero(as_tuple=True)
    pos_idx = cols_t[c_idx]
    unique = sorted(set(token_set.ids))
    ids = torch.tensor(unique, device=device)
    back = torch.tensor([unique.index(i) for i in token_set.ids], device=device)
    n_rows, n_cells, n_ids = len(row_specs), len(b_idx), len(unique)
    size = chunk_size or auto_chunk_size(adapter.d_vocab_out, n_cells)
    prob = torch.full((n_rows, n_cells, n_ids), float("nan"), device=device)
    rank = torch.full_like(prob, float("nan"))
    steps = [(r, slice(s, min(n_cells, s + size))) for r in range(n_rows) for s in range(0, n_cells, size)]
    work = None
    quiet = not progress or len(steps) <= max(_QUIET_STEPS, n_rows)  # a bar only when rows need several chunks
    for r, cells in tqdm(steps, desc="token trajectory", disable=quiet, leave=False):
        row = row_specs[r]
        where = (b_idx[cells], pos_idx[cells])
        if row.site is Site.LOGITS:
            z = logits[where].float()
        else:
            # Layers may live on different devices (device_map); decode where the head lives.
            resid = readout.apply(acts[(row.site, row.layer)].to(device)[where], row.site, row.layer)[0]
            z = adapter.lens_logits(resid).float()
        if work is None or work.numel() < z.numel():
            work = torch.empty(z.numel(), dtype=z.dtype, device=device)
        prob[r, cells], rank[r, cells] = _gather(z, ids, work[: z.numel()].view_as(z))
    values = {"set_prob": prob.sum(-1), "set_rank": rank.amin(-1), "prob": prob[..., back], "rank": rank[..., back]}

    def grid(flat: Tensor) -> Tensor:
        """[rows, cells, ...] -> [batch, rows, cols, ...], padding NaN."""
        full = torch.full((p.batch, n_rows, len(cols), *flat.shape[2:]), float("nan"), device=device)
        full[b_idx, :, c_idx] = flat.transpose(0, 1)
        return full

    return {**{name: grid(v) for name, v in values.items()}, "valid": valid}


def _result(adapter, p, row_specs, row_lenses, kind, cols, token_set, grid) -> TokenTrajectoryResult:
    tensors = {name: value.cpu() for name, value in grid.items()}
    tensors["tokens"] = p.tokens[:, cols].cpu().masked_fill(~tensors["valid"], -1)
    row_tokens = [[s[c] if c < len(s) else "" for c in cols] for s in p.str_tokens]
    row_lengths = p.lengths.tolist()
    str_tokens = row_tokens if p.batched else row_tokens[0]
    lengths = row_lengths if p.batched else row_lengths[0]
    if not p.batched:
        tensors = {k: v[0] for k, v in tensors.items()}
    inputs = [t if isinstance(t, str) else operator.index(t) for t in token_set.inputs]
    return TokenTrajectoryResult(
        **tensors,
        str_tokens=str_tokens,
        prompt_lengths=lengths,
        token_ids=token_set.ids,
        token_strings=adapter.token_strings(token_set.ids),
        token_inputs=inputs,
        truncated=token_set.truncated,
        row_labels=[row.label for row in row_specs],
        row_sites=[(row.site.value, row.layer) for row in row_specs],
        row_lenses=row_lenses,
        lens=kind,
        positions=cols,
        batched=p.batched,
    )


__all__ = ["MULTI_TOKEN", "token_trajectory"]
