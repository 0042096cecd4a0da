"""Bandwidth: how many residual features must be kept for the output, or the input, to survive."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import OptionError
from ..hooks.adapter import adapter_for
from ..hooks.preserve import preserves_model
from ..hooks.targets import Target, as_target
from ..inversion.api import invert as invert_fn
from ..metrics import kl_divergence, top1_agreement
from ..validation import check_bool, check_choice, check_destination, check_number
from .sweep import ablation_sweep


@dataclass(frozen=True, kw_only=True)
class BandwidthResult:
    """Output (and, when exact inversion exists, input recovery) against the kept width.

    Attributes:
        widths: kept feature counts (features `keep:` zeroed at the target).
        kl: [widths] mean over positions of KL(clean ‖ truncated) next-token distributions.
        top1_agreement: [widths] fraction of positions whose top-1 prediction is unchanged.
        recovered: [widths] token accuracy of exact inversion from the first `keep`
            features of the (untruncated) target, or None when it was not run.
        min_width: the smallest width from which on every larger width meets the
            criterion, or None if none does.
        criterion: what min_width asks for.
    """

    target: str
    widths: list[int]
    kl: Float[Tensor, " width"]
    top1_agreement: Float[Tensor, " width"]
    recovered: Float[Tensor, " width"] | None
    min_width: int | None
    criterion: str
    d_model: int

    def __repr__(self) -> str:
        return (
            f"BandwidthResult({self.target}: {len(self.widths)} widths up to {max(self.widths)} of {self.d_model}, "
            f"min_width={self.min_width} ({self.criterion}))"
        )

    def plot(self, *, title: str | None = None):
        """Curves of KL, top-1 agreement and (if run) inversion accuracy over the kept width."""
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_scatter(x=self.widths, y=self.kl.tolist(), name="KL(clean ‖ truncated)", mode="lines+markers")
        fig.add_scatter(
            x=self.widths, y=self.top1_agreement.tolist(), name="top-1 unchanged", mode="lines+markers", yaxis="y2"
        )
        if self.recovered is not None:
            fig.add_scatter(
                x=self.widths,
                y=self.recovered.tolist(),
                name="input recovered (exact)",
                mode="lines+markers",
                yaxis="y2",
            )
        if self.min_width is not None:
            fig.add_vline(x=self.min_width, line_dash="dot", annotation_text=f"min width {self.min_width}")
        fig.update_layout(
            title=title or f"Bandwidth of {self.target}",
            xaxis_title="features kept",
            yaxis=dict(title="KL"),
            yaxis2=dict(title="fraction", overlaying="y", side="right", range=[0, 1.05]),
        )
        return fig

    def to_html(self, path: "str | Path") -> Path:
        """Write the plot to one offline HTML file (plotly.js embedded); return its path."""
        path = check_destination(path)
        from ..viz.html import write_figures_html

        return write_figures_html(path, self.plot(), title="Bandwidth", heading="Bandwidth of the residual stream",
                                  explanation="How the output and the input's recoverability change as the "
                                  "residual stream is truncated to fewer features.")


def _mean_kl(ablated: Tensor, clean: Tensor) -> Tensor:
    """Mean over positions of KL(clean ‖ ablated), one value per row."""
    return kl_divergence(clean, ablated).mean(-1)


def _top1_agreement(ablated: Tensor, clean: Tensor) -> Tensor:
    """Fraction of positions whose top-1 prediction is unchanged, one value per row."""
    return top1_agreement(ablated, clean).mean(-1)


def _min_width(widths: list[int], ok: list[bool]) -> int | None:
    best = None
    for width, good in zip(reversed(widths), reversed(ok), strict=True):
        if not good:
            break
        best = width
    return best


def _recovery(adapter, prompt, target: Target, widths: list[int]) -> list[float]:
    """Token accuracy of exact inversion from the first `keep` features of the target, per width."""
    scores = []
    for width in widths:
        if width == 0:
            scores.append(0.0)
            continue
        sliced = Target(site=target.site, layer=target.layer, tokens=target.tokens, features=slice(None, width))
        result = invert_fn(adapter.model, prompt, target=sliced, method="exact", progress=False)
        accuracy = result.token_accuracy
        assert accuracy is not None  # narrowing: a prompt was inverted, so its true tokens are known
        scores.append(float(accuracy))
    return scores


INVERT_CHOICES = ("auto", "yes", "no")
InvertChoice = Literal["auto", "yes", "no"]


@preserves_model
def bandwidth(
    model,
    prompt,
    /,
    *,
    target: "Target | str",
    widths: Sequence[int] | None = None,
    kl_threshold: float = 0.01,
    invert: InvertChoice = "auto",
    progress: bool = True,
) -> BandwidthResult:
    """Truncate a residual width step by step and measure what survives.

    Args:
        model: a TransformerBridge or HookedTransformer.
        prompt: one prompt.
        target: where to truncate, e.g. `"blocks.1.hook_resid_post"` (its token slice
            picks the truncated positions; no feature slice).
        widths: kept widths to try (default: 8 steps up to d_model).
        kl_threshold: the output counts as intact when mean KL ≤ this and every top-1
            prediction is unchanged.
        invert: "auto" or "yes" (run exact inversion from the first `keep` features) or "no".
        progress: show progress bars.

    Returns:
        BandwidthResult; min_width asks for full input recovery when inversion ran,
        else for an intact output.
    """
    check_choice("invert", invert, INVERT_CHOICES)
    check_number("kl_threshold", kl_threshold, low=0)
    check_bool("progress", progress)
    adapter = adapter_for(model)
    target = as_target(target).resolve(adapter)
    if target.features != slice(None):
        raise OptionError(f"bandwidth sets the width itself; give {target} without a feature slice.")
    swept = Target(site=target.site, layer=target.layer, tokens=target.tokens)
    common = dict(ablation="truncate", target=swept, widths=widths, progress=progress)
    kl = ablation_sweep(adapter, prompt, metric=_mean_kl, **common)
    top1 = ablation_sweep(adapter, prompt, metric=_top1_agreement, **common)
    widths = list(kl.columns)
    recovered = None
    if invert != "no":
        recovered = torch.tensor(_recovery(adapter, prompt, target, widths))
        ok = [s >= 1.0 for s in recovered.tolist()]
        criterion = "exact inversion recovers every token"
    else:
        ok = [bool(k <= kl_threshold) and bool(t >= 1.0) for k, t in zip(kl.values[0], top1.values[0], strict=True)]
        criterion = f"mean KL ≤ {kl_threshold:g} and every top-1 prediction unchanged"
    return BandwidthResult(
        target=str(target), widths=widths, kl=kl.values[0], top1_agreement=top1.values[0], recovered=recovered,
        min_width=_min_width(widths, ok), criterion=criterion, d_model=adapter.d_model,
    )
