"""Deletion / insertion curves and AOPC: does removing the top-scored tokens change the output?

For k = 0..m (m attributed tokens, or `steps` evenly spaced values of k):

- deletion: the k highest-scored tokens are replaced by the baseline;
- insertion: every attributed token is replaced except the k highest-scored.

The curve value f is the probability of the scored token at the last position for
next-token targets (target None: the clean prediction), and −‖O − O_clean‖₁ for other
targets, so that higher always means "closer to the clean output". Then (ERASER's AOPC,
averaged over the k ≥ 1 steps):

    comprehensiveness = mean_k [ f(full) − f(deletion_k) ]   (higher: the top tokens matter)
    sufficiency       = mean_k [ f(full) − f(insertion_k) ]  (lower: the top tokens suffice)

The same curves for random orders (`n_random`, `seed`) give the chance level.
"""

from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..deprecation import renamed_options
from ..errors import OptionError, PromptError
from ..hooks.preserve import preserves_model
from ..metrics import probability
from ..validation import check_bool, check_destination, check_int, check_seed
from .api import predict, prepare
from .objective import build_objective
from .occlusion import default_chunk, occluded_inputs, resolve_baseline
from .result import AttributionResult


@dataclass(frozen=True, kw_only=True)
class FaithfulnessResult:
    """Deletion and insertion curves of one attribution, with AOPC summaries.

    Attributes:
        k: [steps] number of top tokens deleted (or kept).
        fraction: k / m.
        deletion, insertion: [steps] curve values f (see the module docs).
        random_deletion, random_insertion: [steps] the mean over random orders.
        comprehensiveness, sufficiency: AOPC of the attribution's order.
        random_comprehensiveness, random_sufficiency: AOPC of random orders.
        measure: what f is.
    """

    k: list[int]
    fraction: Float[Tensor, " step"]
    deletion: Float[Tensor, " step"]
    insertion: Float[Tensor, " step"]
    random_deletion: Float[Tensor, " step"]
    random_insertion: Float[Tensor, " step"]
    comprehensiveness: float
    sufficiency: float
    random_comprehensiveness: float
    random_sufficiency: float
    measure: str
    method: str

    def __repr__(self) -> str:
        return (
            f"FaithfulnessResult({self.method}, {len(self.k)} steps, measure: {self.measure}; "
            f"comprehensiveness={self.comprehensiveness:.4g} (random {self.random_comprehensiveness:.4g}), "
            f"sufficiency={self.sufficiency:.4g} (random {self.random_sufficiency:.4g}))"
        )

    def plot(self) -> go.Figure:
        """Deletion and insertion curves against the fraction of tokens, random orders dashed."""
        x = self.fraction.tolist()
        fig = go.Figure()
        for name, y, dash, color in (
            ("deletion", self.deletion, None, "#d62728"),
            ("insertion", self.insertion, None, "#3163ce"),
            ("deletion, random order", self.random_deletion, "dash", "#d62728"),
            ("insertion, random order", self.random_insertion, "dash", "#3163ce"),
        ):
            fig.add_trace(go.Scatter(x=x, y=y.tolist(), name=name, line=dict(dash=dash, color=color)))
        fig.update_layout(
            title=f"Faithfulness of {self.method}: comprehensiveness {self.comprehensiveness:.3g}, "
            f"sufficiency {self.sufficiency:.3g}",
            xaxis_title="fraction of top tokens deleted / kept",
            yaxis_title=self.measure,
        )
        return fig

    def to_html(self, path: "str | Path") -> Path:
        """Write the deletion/insertion curves to one offline HTML file (plotly.js embedded); return its path."""
        path = check_destination(path)
        from ..viz.html import write_figures_html

        return write_figures_html(path, self.plot(), title="Attribution faithfulness", heading="Attribution faithfulness",
                                  explanation="How the output changes as the most-attributed tokens are deleted "
                                  "(or inserted) first: a faithful attribution moves the output fastest.")


def _steps(m: int, steps: int | None) -> list[int]:
    """The k values: every k from 0 to m, or `steps` + 1 evenly spaced ones."""
    if steps is None or steps >= m:
        return list(range(m + 1))
    return sorted({round(j * m / steps) for j in range(steps + 1)})


def _aopc(full: float, curve: Tensor) -> float:
    return float((full - curve[1:]).mean()) if len(curve) > 1 else 0.0


@dataclass(frozen=True, kw_only=True)
class _Curves:
    """The deletion and insertion sets of the attribution's order and of the random orders."""

    positions: Tensor  # attributed positions
    ks: list[int]
    orders: list[Tensor]  # the attribution's order first, then the random ones

    def sets(self) -> list[list[int]]:
        out = []
        for order in self.orders:
            out += [order[:k].tolist() for k in self.ks]  # deletion: the top k replaced
            out += [order[k:].tolist() for k in self.ks]  # insertion: all but the top k replaced
        return out


def _orders(result: AttributionResult, mask: Tensor, steps, n_random: int, seed: int) -> _Curves:
    positions = torch.nonzero(mask)[:, 0]
    order = positions[torch.argsort(-result.scores[positions], stable=True)]
    generator = torch.Generator().manual_seed(seed)
    randoms = [positions[torch.randperm(len(positions), generator=generator)] for _ in range(n_random)]
    return _Curves(positions=positions, ks=_steps(len(positions), steps), orders=[order, *randoms])


def _curve_values(adapter, tokens, objective, sets, base, batch_size, progress) -> Tensor:
    """F for every variant: the scored token's probability (next-token outputs) or −‖O − O_clean‖₁."""
    clean = objective.outputs(adapter, tokens)
    size = batch_size or default_chunk(tokens.shape[1])
    values = []
    for begin in tqdm(range(0, len(sets), size), disable=not progress, desc="faithfulness", leave=False):
        batch, embeds = occluded_inputs(adapter, tokens, sets[begin : begin + size], base)
        out = objective.outputs(adapter, batch, embeds)
        if objective.is_logits:
            index = torch.tensor(objective.row_tokens, device=out.device)[objective.main]
            logits = out[:, objective.main]
            values.append(probability(logits, index[None, :].expand(len(out), -1)).sum(-1).cpu())
        else:
            values.append(-objective.metric("l1", clean, out)[:, objective.main].sum(-1).cpu())
    return torch.cat(values)


def _check_options(result, steps, n_random, seed, batch_size, progress) -> None:
    if not isinstance(result, AttributionResult) or result.spec is None:
        raise OptionError(f"result must be an AttributionResult from attribute(); got {type(result).__name__}.")
    check_int("n_random", n_random, low=1)
    check_int("steps", steps, low=1, allow_none=True)
    check_bool("progress", progress)
    check_seed(seed, allow_none=False)
    check_int("batch_size", batch_size, low=1, allow_none=True)


def _summary(curves: Tensor, plan: _Curves, objective, method: str) -> FaithfulnessResult:
    """AOPC of the attribution's order and of the random orders, from [order, deletion/insertion, k] curves."""
    full, rand, n_random = float(curves[0, 0, 0]), curves[1:].mean(0), len(curves) - 1  # full: nothing deleted
    return FaithfulnessResult(
        k=plan.ks, fraction=torch.tensor(plan.ks, dtype=torch.float32) / max(1, len(plan.positions)),
        deletion=curves[0, 0], insertion=curves[0, 1], random_deletion=rand[0], random_insertion=rand[1],
        comprehensiveness=_aopc(full, curves[0, 0]), sufficiency=_aopc(full, curves[0, 1]),
        random_comprehensiveness=sum(_aopc(full, c[0]) for c in curves[1:]) / n_random,
        random_sufficiency=sum(_aopc(full, c[1]) for c in curves[1:]) / n_random,
        measure="probability of the scored token" if objective.is_logits else "−‖O − O_clean‖₁", method=method,
    )


@renamed_options(chunk_size="batch_size")
@preserves_model
def faithfulness(
    model, prompt, result: AttributionResult, /, *, baseline: "str | int | None" = None, steps: int | None = None,
    n_random: int = 1, seed: int = 0, batch_size: int | None = None, progress: bool = True,
) -> FaithfulnessResult:
    """Deletion / insertion curves and AOPC of an attribution on its own prompt.

    Args:
        model: the model the attribution was computed on.
        prompt: the same prompt.
        result: an AttributionResult from `attribute`.
        baseline: the filler for removed tokens; None reuses the attribution's.
        steps: number of k values (None: every k from 0 to m).
        n_random: random orders averaged for the chance curves.
        seed: seed of the random orders.
        batch_size: variants per forward; None picks a bounded size (`chunk_size` before 0.3).
        progress: show a tqdm bar.

    Returns:
        A FaithfulnessResult (`.comprehensiveness`, `.sufficiency`, `.plot()`).
    """
    _check_options(result, steps, n_random, seed, batch_size, progress)
    spec = result.spec
    setup = prepare(model, prompt, include_bos=spec.include_bos)
    adapter, tokens = setup.adapter, setup.tokens
    if not torch.equal(tokens[0].cpu(), result.tokens):
        raise PromptError("The prompt does not tokenize to the tokens the attribution was computed on.")
    objective = build_objective(adapter, tokens, target=spec.target, answer=spec.answer, objective=spec.objective,
                                per_output=False)
    objective = objective.with_prediction(adapter, predict(adapter, tokens))
    base = resolve_baseline(adapter, spec.baseline if baseline is None else baseline)
    plan = _orders(result, setup.mask, steps, n_random, seed)
    with torch.no_grad():
        values = _curve_values(adapter, tokens, objective, plan.sets(), base, batch_size, progress)
    return _summary(values.view(len(plan.orders), 2, len(plan.ks)), plan, objective, result.method)
