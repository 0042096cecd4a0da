"""Gradient × input per token: v_c = Σ_d ∂O/∂a_{c,d} · a_{c,d} (signed) or Σ_d |∂O/∂a_{c,d} · a_{c,d}|.

`a` is the token embedding as the model's embedding hook emits it (W_E[t] times the
embedding scale; learned positions are added by the model afterwards and are not part of
`a`). One forward and one backward; in per-output mode the prompt is repeated once per
output row in batched passes, each copy back-propagating its own row's scalar.
"""

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .._typing import Tokens
from ..hooks.adapter import ModelAdapter
from .objective import Objective, widen


def _reduce(grad: Tensor, embeds: Tensor, signed: bool) -> Tensor:
    product = widen(grad * embeds)
    return product.sum(-1) if signed else product.abs().sum(-1)


def _input_embeds(adapter: ModelAdapter, tokens: Tokens, copies: int) -> Tensor:
    embeds = adapter.embed(tokens).detach().to(adapter.dtype)
    return embeds.expand(copies, -1, -1).clone().requires_grad_(True)


def grad_x_input_scores(
    adapter: ModelAdapter, tokens: Tokens, objective: Objective, *, signed: bool
) -> tuple[Float[Tensor, " pos"], int | None, Objective]:
    """Scores for the objective's main output (the sum of its main rows' scalars).

    For next-token targets the same forward also gives the model's prediction, which is
    returned (None for other targets) with the objective it completes.
    """
    predicted = None
    with torch.enable_grad():
        embeds = _input_embeds(adapter, tokens, 1)
        outputs = objective.outputs(adapter, tokens, embeds)
        if objective.is_logits:
            predicted = int(outputs[0, -1].detach().argmax())
            objective = objective.with_prediction(adapter, predicted)
        scalars = objective.scalars(outputs)
        (grad,) = torch.autograd.grad(scalars[:, objective.main].sum(), embeds)
    return _reduce(grad, embeds.detach(), signed)[0].cpu(), predicted, objective


def grad_x_input_rows(
    adapter: ModelAdapter,
    tokens: Tokens,
    objective: Objective,
    *,
    signed: bool,
    batch_size: int,
    progress: bool,
) -> Float[Tensor, "row pos"]:
    """Scores for every output row separately: [rows, pos], `batch_size` gradient copies per pass."""
    n_rows = len(objective.rows)
    out = []
    for begin in tqdm(range(0, n_rows, batch_size), disable=not progress, desc="grad × input", leave=False):
        rows = list(range(begin, min(begin + batch_size, n_rows)))
        with torch.enable_grad():
            embeds = _input_embeds(adapter, tokens, len(rows))
            batch = tokens.expand(len(rows), -1)
            scalars = objective.scalars(objective.outputs(adapter, batch, embeds))
            picked = scalars[torch.arange(len(rows)), torch.tensor(rows)]
            (grad,) = torch.autograd.grad(picked.sum(), embeds)
        out.append(_reduce(grad, embeds.detach(), signed).cpu())
    return torch.cat(out)
