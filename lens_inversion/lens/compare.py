"""Several lenses on one prompt, side by side: KL to the final output per layer.

The logit lens is always the first line: a trained lens is worth its training only where it
reads the layers closer to the model's own output than the identity does.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import OptionError
from ..hooks.preserve import preserves_model
from .logit_lens import logit_lens
from .result import _LENS_NAMES, LogitLensResult


@dataclass(frozen=True, kw_only=True)
class LensComparison:
    """Mean KL(final ‖ row) over a prompt's positions, one line per lens.

    Attributes:
        lenses: the lens kinds compared, "logit" first.
        kl: [lens, row] mean KL in nats over the valid positions (the output row is 0).
        row_labels: "embed", block indices, "output".
        row_lenses: per lens, what decoded each row (see LogitLensResult.row_lenses).
        results: per lens kind, the full LogitLensResult.
    """

    lenses: list[str]
    kl: Float[Tensor, "lens row"]
    row_labels: list[str]
    row_lenses: list[list[str]]
    results: dict[str, LogitLensResult]

    def plot(self) -> go.Figure:
        """One line per lens across the lens rows (the output row, 0 by definition, is left out).

        Rows a lens read with the identity are drawn hollow.
        """
        fig = go.Figure()
        for i, kind in enumerate(self.lenses):
            own = [k == kind or kind == "logit" for k in self.row_lenses[i][:-1]]
            fig.add_trace(go.Scatter(
                x=self.row_labels[:-1], y=self.kl[i, :-1].tolist(), mode="lines+markers", name=_LENS_NAMES.get(kind, kind),
                marker=dict(symbol=["circle" if o else "circle-open" for o in own], size=9),
                hovertemplate="row %{x}: KL %{y:.4g} nats<extra>" + _LENS_NAMES.get(kind, kind) + "</extra>",
            ))
        fig.update_layout(
            title="KL(final ‖ lens) per layer, mean over positions (hollow: read by the identity)",
            xaxis_title="row", yaxis_title="KL (nats)", yaxis_type="log", height=380,
            legend=dict(orientation="h", y=-0.25),
        )
        return fig


@preserves_model
def compare_lenses(model, prompt, /, *, lenses: Sequence, positions=None) -> LensComparison:
    """The logit lens and each of `lenses` on one prompt: per-row mean KL to the final output.

    Args:
        model: a TransformerLens model.
        prompt: one prompt (a string or [pos] token ids).
        lenses: trained lenses (li.TunedLens, JacobianLens, callables); the logit lens is added first.
        positions: positions to average over (as in logit_lens); default all.
    """
    if isinstance(lenses, (str, bytes)) or not isinstance(lenses, Sequence):
        raise OptionError(f"lenses must be a list of lenses (li.load_lens(...)); got {type(lenses).__name__}.")
    results = {}
    for lens in ["logit", *lenses]:
        result = logit_lens(model, prompt, lens=lens, compare="final", positions=positions, progress=False)
        if result.batched:
            raise OptionError("compare_lenses takes one prompt, not a batch.")
        if result.lens in results:
            raise OptionError(f"lenses holds two {result.lens} lenses; give at most one of each kind.")
        results[result.lens] = result
    kinds = list(results)
    kl = torch.stack([_mean_over_positions(results[k]) for k in kinds])
    first = results["logit"]
    return LensComparison(lenses=kinds, kl=kl, row_labels=first.row_labels,
                          row_lenses=[results[k].row_lenses for k in kinds], results=results)


def _mean_over_positions(result: LogitLensResult) -> Float[Tensor, " row"]:
    return result.kl[:, result.valid].mean(-1)


__all__ = ["LensComparison", "compare_lenses"]
