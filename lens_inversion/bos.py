"""The one BOS policy of every family.

- Prompts are tokenized the model's way: the model's BOS token first when it has one
  (`prepend_bos=True`, TransformerLens's default); inputs we build (feature visualization)
  follow the same rule.
- The BOS position is context, not content: it is not attributed, inverted, walked, scored
  or counted in accuracies unless `include_bos=True`.
- Text shown to the user leaves out a leading BOS.

Every helper here takes the tokenizer's BOS id (None when the model has none) so the rule
is written once.
"""

import torch
from jaxtyping import Int
from torch import Tensor


def starts_with_bos(tokens: Int[Tensor, "*batch pos"], bos: int | None) -> bool:
    """True when every row of `tokens` begins with `bos` (False for a model without BOS or no tokens)."""
    if bos is None or tokens.shape[-1] == 0:
        return False
    return bool((tokens[..., 0] == bos).all())


def first_content_position(tokens: Int[Tensor, "*batch pos"], bos: int | None, *, include_bos: bool) -> int:
    """The first position an analysis works on: 1 when a leading BOS is left out, else 0."""
    return int(not include_bos and starts_with_bos(tokens, bos))


def content_mask(tokens: Int[Tensor, "*batch pos"], bos: int | None, *, include_bos: bool) -> Tensor:
    """[pos] booleans: True at the positions an analysis works on (all but a left-out leading BOS)."""
    first = first_content_position(tokens, bos, include_bos=include_bos)
    return torch.arange(tokens.shape[-1], device=tokens.device) >= first


def with_bos(ids: list[int], bos: int | None, *, prepend_bos: bool = True) -> list[int]:
    """`ids` with the model's BOS first (when it has one and `prepend_bos`)."""
    return [bos, *ids] if prepend_bos and bos is not None else list(ids)


def without_leading_bos(ids: list[int], bos: int | None) -> list[int]:
    """`ids` without a leading BOS: what the user's text shows."""
    return ids[1:] if ids and bos is not None and ids[0] == bos else list(ids)


__all__ = ["content_mask", "first_content_position", "starts_with_bos", "with_bos", "without_leading_bos"]
