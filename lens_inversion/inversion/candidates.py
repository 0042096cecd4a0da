"""Cheap candidate orderings for the exact search: which tokens to verify first.

The exact search is correct whatever the order (it falls back to the whole vocabulary);
a good order only makes it fast. `"gradient"` linearises the target distance around the
mean embedding: one forward and backward pass per position gives, for every token v,
the first-order estimate d(e₀) + ∇d · (W_E[v] − e₀), and tokens are verified in that
order. On the embedded model (4,096 tokens; 10 held-out prompts of 20 tokens) this puts
the true token at mean rank 2.2 (resid_post of block 0) to 55 (last block; median 1 to 19).
On the round-1 grammar-only model, a few Adam steps on a continuous embedding followed by
nearest-row decoding ranked it at 70 to 230.
"""

import operator
from collections.abc import Callable
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import OptionError, PromptError, check_choice
from ..hooks import ModelAdapter

Order = Literal["gradient", "random", "vocab"]
ORDERS = ("gradient", "random", "vocab")


def _integer_id(token) -> int:
    """An integer id (NumPy and 0-d tensor integers too); floats are refused, never truncated."""
    try:
        return operator.index(token)
    except TypeError:
        raise OptionError(
            f"allowed_tokens must hold integer ids or single-token strings; got {type(token).__name__} {token!r}."
        ) from None


def _listed_ids(adapter: ModelAdapter, allowed_tokens) -> list[int]:
    """The ids in a list / tuple / range / set / tensor of ids or single-token strings."""
    if isinstance(allowed_tokens, str) or not isinstance(allowed_tokens, (list, tuple, range, set, frozenset, Tensor)):
        hint = f" (write [{allowed_tokens!r}] for one token)" if isinstance(allowed_tokens, str) else ""
        raise OptionError(
            "allowed_tokens must be a list of token ids or single-token strings, a tensor of ids or a boolean "
            f"mask over the vocabulary, or None (every token); got {type(allowed_tokens).__name__} {allowed_tokens!r}{hint}."
        )
    if isinstance(allowed_tokens, Tensor):
        if allowed_tokens.is_floating_point() or allowed_tokens.is_complex():
            raise OptionError(f"allowed_tokens must hold integer ids or be a boolean mask; got dtype {allowed_tokens.dtype}.")
        return allowed_tokens.flatten().tolist()
    try:
        return [adapter.token_id(t) if isinstance(t, str) else _integer_id(t) for t in allowed_tokens]
    except PromptError as error:
        raise OptionError(f"In allowed_tokens: {error}") from None


def allowed_ids(adapter: ModelAdapter, allowed_tokens, *, d_vocab: int | None = None) -> Int[Tensor, " k"]:
    """The allowed vocabulary as sorted unique ids (all `d_vocab` tokens when None).

    The one parser of `allowed_tokens` in the package: ids, single-token strings, a tensor
    of ids, or a boolean mask of shape [d_vocab].
    """
    d_vocab = d_vocab or adapter.d_vocab
    if allowed_tokens is None:
        return torch.arange(d_vocab, device=adapter.device)
    if isinstance(allowed_tokens, Tensor) and allowed_tokens.dtype == torch.bool:
        if allowed_tokens.shape != (d_vocab,):
            raise OptionError(f"A boolean allowed_tokens mask must have shape ({d_vocab},); got {tuple(allowed_tokens.shape)}.")
        raw = allowed_tokens.nonzero().flatten().tolist()
    else:
        raw = _listed_ids(adapter, allowed_tokens)
    if not raw:
        raise OptionError("allowed_tokens is empty; give at least one token id or string.")
    bad = [t for t in raw if not 0 <= t < d_vocab]
    if bad:
        raise OptionError(f"allowed_tokens holds ids outside [0, {d_vocab}): {bad[:5]}.")
    return torch.tensor(sorted(set(raw)), dtype=torch.long, device=adapter.device)


def order_candidates(
    adapter: ModelAdapter,
    objective: Callable[[Float[Tensor, "rows free d_model"]], Float[Tensor, " rows"]],
    allowed: Int[Tensor, " k"],
    *,
    rows: int,
    free: int,
    order: Order = "gradient",
    generator: torch.Generator | None = None,
) -> Int[Tensor, "rows free k"]:
    """Rank the allowed tokens at each free position, most promising first.

    Args:
        adapter: the model.
        objective: maps embeddings of the free positions (embedding-hook space) to one
            distance per row; it must be differentiable (`"gradient"` only).
        allowed: the candidate ids.
        rows: independent rows (hypotheses) to rank for.
        free: free positions per row, ranked jointly.
        order: `"gradient"` (first-order estimate around the mean embedding), `"random"`
            (seeded by `generator`) or `"vocab"` (id order).
        generator: random source for `"random"`.

    Returns:
        [rows, free, k] candidate ids, best first.
    """
    check_choice("order", order, ORDERS)
    k = len(allowed)
    if order == "vocab":
        return allowed.expand(rows, free, k).clone()
    if order == "random":
        keys = torch.rand(rows, free, k, generator=generator).to(allowed.device)
        return allowed[keys.argsort(-1)]
    table = adapter.embed(allowed).detach().float()  # [k, d]
    start = table.mean(0).expand(rows, free, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        objective(start.to(adapter.dtype)).sum().backward()
    assert start.grad is not None  # narrowing: backward() just filled it
    grad = start.grad.float()  # [rows, free, d]
    scores = torch.einsum("rfd,kd->rfk", grad, table)
    return allowed[scores.argsort(-1)]


__all__ = ["ORDERS", "Order", "allowed_ids", "order_candidates"]
