"""Feature visualization: the input that maximises a target slice.

Gradient descent (the research: minimise ‖c − O‖₁ for a large constant c, or maximise
the mean of the slice), decoded to top-k texts; plus an exhaustive batched scan of every
single-token input, which gives the exact argmax at that length.
"""

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..deprecation import renamed_options
from ..errors import TargetError
from ..hooks import Target, adapter_for, preserves_model
from ..validation import check_bool, check_choice, check_int, check_number
from .decode import allowed_mask
from .gradient import GRADIENT_METHODS, MAX_RESTARTS, GradientMethod, Optimizer, invert_gradient
from .observed import as_targets

Objective = Literal["constant", "mean"]
OBJECTIVES = ("constant", "mean")


@dataclass(frozen=True, kw_only=True)
class FeatureVizResult:
    """The input found for a target slice, and the exhaustive single-token scan."""

    target: str
    objective: str
    tokens: Int[Tensor, " pos"]  # the best input found by gradient descent (BOS included when used)
    text: str
    top_k_texts: list[str]
    activation: float  # mean of the target slice on the decoded tokens
    loss_history: Float[Tensor, " steps"] | None
    scan_scores: Float[Tensor, " d_vocab"] | None = None  # objective per single-token input (−inf: not allowed)
    scan_activations: Float[Tensor, " d_vocab"] | None = None  # mean of the slice per single-token input
    scan_tokens: Int[Tensor, " k"] | None = None  # best single tokens, best first
    scan_texts: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        scan = f", scan_texts={self.scan_texts[:5]!r}" if self.scan_texts else ""
        return (
            f"FeatureVizResult(target={self.target!r}, objective={self.objective!r}, text={self.text!r}, "
            f"activation={self.activation:.4g}{scan})"
        )

    def plot(self, k: int = 20):
        """Bar chart of the best single-token inputs' activations (or the loss history)."""
        import plotly.graph_objects as go

        from ..viz.heatmap import plotly_text

        if self.scan_tokens is None:
            y = [] if self.loss_history is None else self.loss_history.tolist()
            fig = go.Figure(go.Scatter(y=y, mode="lines", name="loss"))
            return fig.update_layout(title=plotly_text(f"Feature visualization of {self.target}"), xaxis_title="step")
        assert self.scan_texts is not None and self.scan_activations is not None  # narrowing: set with scan_tokens
        ids = self.scan_tokens[:k].tolist()
        fig = go.Figure(go.Bar(x=[plotly_text(repr(t)) for t in self.scan_texts[:k]], y=self.scan_activations[ids].tolist()))
        title = plotly_text(f"Single-token inputs that maximise {self.target}")
        return fig.update_layout(title=title, yaxis_title="mean activation")


def _check_options(*, objective, method, c, prepend_bos, scan, batch_size, n_restarts, progress) -> None:
    check_choice("objective", objective, OBJECTIVES)
    check_choice("method", method, GRADIENT_METHODS)
    check_number("c", c)
    check_bool("prepend_bos", prepend_bos)
    check_bool("scan", scan, allow_none=True)
    check_int("batch_size", batch_size, low=1)
    check_int("n_restarts", n_restarts, low=1, high=MAX_RESTARTS)
    check_bool("progress", progress)


@dataclass(frozen=True, kw_only=True)
class _Goal:
    """What the descent is asked to reach: the target slice, its input length, the loss."""

    resolved: Target  # as given, resolved
    target: Target  # batch slice dropped
    name: str
    n_pos: int  # input length, BOS included when used
    use_bos: bool
    goal: Tensor  # [1, tokens, features] filled with c
    loss: object


def _goal(adapter, target, *, n_tokens: int, objective: str, c: float, prepend_bos: bool) -> _Goal:
    use_bos = prepend_bos and adapter.bos_token_id is not None
    check_int("n_tokens", n_tokens, low=1, high=adapter.n_ctx - int(use_bos))
    targets = as_targets(adapter, target)
    if len(targets) != 1:
        raise TargetError(f"visualize_feature takes one target; got {len(targets)}: {[str(t) for t in targets]}.")
    (resolved,) = targets
    n_pos = n_tokens + int(use_bos)
    width = adapter.d_vocab_out if resolved.site.value == "logits" else adapter.d_model
    shape = (1, len(resolved.token_positions(n_pos)), len(resolved.feature_indices(width)))
    loss = "l1" if objective == "constant" else (lambda out, _: -out.flatten(1).mean(1))
    return _Goal(resolved=resolved, target=replace(resolved, batch=slice(None)), name=str(resolved), n_pos=n_pos, use_bos=use_bos,
                 goal=torch.full(shape, float(c), device=adapter.device), loss=loss)


@renamed_options(scan_batch="batch_size")
@preserves_model
def visualize_feature(
    model, /, *, target: "str | Target", n_tokens: int, objective: Objective = "constant", c: float = 100.0,
    method: GradientMethod = "embedding", steps: int = 200, lr: float | None = None, optimizer: Optimizer = "sgd",
    allowed_tokens=None, top_k: int = 5, n_restarts: int = 1, prepend_bos: bool = True, scan: bool | None = None,
    batch_size: int = 512, seed: int | None = 0, progress: bool = True,
) -> FeatureVizResult:
    """Find the input of `n_tokens` tokens that maximises a target slice.

    Args:
        model: a TransformerLens model.
        target: the slice to maximise, e.g. `"blocks.0.hook_resid_post[:, :, 20:24]"`.
        n_tokens: length of the input (after the BOS when `prepend_bos`).
        objective: `"constant"` (minimise mean |c − O|) or `"mean"` (maximise mean O).
        c: the large constant of the "constant" objective.
        method: gradient method, as in `invert` (`"embedding"` or `"direct"`).
        steps: gradient steps.
        lr: learning rate (method default when None).
        optimizer: `"sgd"` or `"adam"`.
        allowed_tokens: restrict the decoded tokens (and the scan).
        top_k: texts kept from the descent and tokens kept from the scan (scan: 5·top_k).
        n_restarts: independent starts in the batch axis (at most 4096).
        prepend_bos: put the BOS token first (held fixed) when the model has one.
        scan: score every single-token input exhaustively (default: when n_tokens == 1).
        batch_size: single-token inputs per forward pass in the scan (old spelling `scan_batch`).
        seed: seed of the start noise (None: fresh randomness).
        progress: show progress bars.

    Returns:
        A `FeatureVizResult` (tensors on the CPU).
    """
    _check_options(objective=objective, method=method, c=c, prepend_bos=prepend_bos, scan=scan, batch_size=batch_size,
                   n_restarts=n_restarts, progress=progress)
    adapter = adapter_for(model)
    g = _goal(adapter, target, n_tokens=n_tokens, objective=objective, c=c, prepend_bos=prepend_bos)
    res = invert_gradient(
        adapter, g.goal, target=g.resolved, method=method, loss=g.loss, steps=steps, lr=lr, optimizer=optimizer,
        allowed_tokens=allowed_tokens, top_k=top_k, n_restarts=n_restarts, include_bos=not g.use_bos, n_pos=g.n_pos,
        seed=seed, progress=progress,
    )
    tokens = res.tokens[0]
    with torch.no_grad():
        out = g.target.select(adapter.run(tokens[None].to(adapter.device), capture=[g.target.key])[g.target.key]).float()
    found = dict(target=g.name, objective=objective, tokens=tokens, text=res.text, top_k_texts=res.trace.top_k_texts[0],
                 activation=float(out.mean()), loss_history=res.trace.loss_history)
    if not (n_tokens == 1 if scan is None else scan):
        return FeatureVizResult(**found)
    scores, acts = _scan(adapter, g.target, objective, c, g.use_bos, allowed_tokens, batch_size, progress)
    scan_tokens = scores.topk(min(5 * top_k, int(torch.isfinite(scores).sum()))).indices
    return FeatureVizResult(**found, scan_scores=scores, scan_activations=acts, scan_tokens=scan_tokens,
                            scan_texts=adapter.token_strings(scan_tokens.tolist()))


def _scan(adapter, target: Target, objective: str, c: float, use_bos: bool, allowed_tokens, chunk: int, progress: bool):
    """Objective and mean activation for every single-token input, `chunk` inputs per forward pass."""
    mask = allowed_mask(adapter, allowed_tokens)
    ids = torch.arange(adapter.d_vocab, device=adapter.device)
    if mask is not None:
        ids = ids[mask]
    scores = torch.full((adapter.d_vocab,), float("-inf"))
    acts = torch.full((adapter.d_vocab,), float("nan"))
    for start in tqdm(range(0, len(ids), chunk), desc="scan", disable=not progress, leave=False):
        batch = ids[start : start + chunk, None]
        if use_bos:
            batch = torch.cat([torch.full_like(batch, adapter.bos_token_id), batch], dim=1)
        with torch.no_grad():
            out = target.select(adapter.run(batch, capture=[target.key])[target.key]).float().flatten(1)
        mean = out.mean(1)
        score = -(out - c).abs().mean(1) if objective == "constant" else mean
        chosen = ids[start : start + chunk].cpu()
        scores[chosen], acts[chosen] = score.cpu(), mean.cpu()
    return scores, acts
