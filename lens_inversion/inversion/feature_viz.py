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

from ..errors import OptionError, TargetError
from ..hooks import Target, adapter_for, preserves_model
from ..validation import check_bool, check_choice, check_int, check_number
from .decode import allowed_mask
from .gradient import MAX_RESTARTS, invert_gradient
from .observed import as_targets

Objective = Literal["constant", "mean"]


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
        ids = self.scan_tokens[:k].tolist()
        fig = go.Figure(go.Bar(x=[plotly_text(repr(t)) for t in self.scan_texts[:k]], y=self.scan_activations[ids].tolist()))
        title = plotly_text(f"Single-token inputs that maximise {self.target}")
        return fig.update_layout(title=title, yaxis_title="mean activation")


def _check_options(*, objective, method, c, prepend_bos, scan, scan_batch, n_restarts) -> None:
    check_choice("objective", objective, ("constant", "mean"))
    check_choice("method", method, ("embedding", "direct"))
    check_number("c", c)
    check_bool("prepend_bos", prepend_bos)
    check_bool("scan", scan, allow_none=True)
    check_int("scan_batch", scan_batch, low=1)
    check_int("n_restarts", n_restarts, low=1, high=MAX_RESTARTS)


@preserves_model
def visualize_feature(
    model,
    /,
    *,
    target: "str | Target",
    n_tokens: int,
    objective: Objective = "constant",
    c: float = 100.0,
    method: Literal["embedding", "direct"] = "embedding",
    steps: int = 200,
    lr: float | None = None,
    optimizer: Literal["sgd", "adam"] = "sgd",
    allowed_tokens=None,
    top_k: int = 5,
    n_restarts: int = 1,
    prepend_bos: bool = True,
    scan: bool | None = None,
    scan_batch: int = 512,
    seed: int | None = 0,
    progress: bool = True,
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
        scan_batch: inputs per forward pass in the scan.
        seed: seed of the start noise.
        progress: show progress bars.

    Returns:
        A `FeatureVizResult`.
    """
    _check_options(objective=objective, method=method, c=c, prepend_bos=prepend_bos, scan=scan, scan_batch=scan_batch,
                   n_restarts=n_restarts)
    adapter = adapter_for(model)
    use_bos = prepend_bos and adapter.bos_token_id is not None
    check_int("n_tokens", n_tokens, low=1, high=adapter.n_ctx - int(use_bos))
    targets = as_targets(adapter, target)
    if len(targets) != 1:
        raise TargetError(f"visualize_feature takes one target; got {len(targets)}: {[str(t) for t in targets]}.")
    (resolved,) = targets
    n_pos = n_tokens + int(use_bos)
    width = adapter.d_vocab_out if resolved.site.value == "logits" else adapter.d_model
    shape = (1, len(resolved.token_positions(n_pos)), len(resolved.feature_indices(width)))
    goal = torch.full(shape, float(c), device=adapter.device)
    loss = "l1" if objective == "constant" else (lambda out, _: -out.flatten(1).mean(1))
    res = invert_gradient(
        adapter, goal, target=resolved, method=method, loss=loss, steps=steps, lr=lr, optimizer=optimizer,
        allowed_tokens=allowed_tokens, top_k=top_k, n_restarts=n_restarts, include_bos=not use_bos, n_pos=n_pos,
        seed=seed, progress=progress,
    )
    tokens = res.tokens[0]
    bare = replace(resolved, batch=slice(None))
    with torch.no_grad():
        out = bare.select(adapter.run(tokens[None].to(adapter.device), capture=[bare.key])[bare.key]).float()
    scan = n_tokens == 1 if scan is None else scan
    scores = acts = scan_tokens = None
    scan_texts: list[str] = []
    if scan:
        scores, acts = _scan(adapter, bare, objective, c, use_bos, allowed_tokens, scan_batch, progress)
        scan_tokens = scores.topk(min(5 * top_k, int(torch.isfinite(scores).sum()))).indices
        scan_texts = adapter.token_strings(scan_tokens.tolist())
    return FeatureVizResult(
        target=str(resolved),
        objective=objective,
        tokens=tokens,
        text=res.text,
        top_k_texts=res.top_k_texts[0],
        activation=float(out.mean()),
        loss_history=res.loss_history,
        scan_scores=scores,
        scan_activations=acts,
        scan_tokens=scan_tokens,
        scan_texts=scan_texts,
    )


def _scan(adapter, target: Target, objective: str, c: float, use_bos: bool, allowed_tokens, chunk: int, progress: bool):
    """Objective and mean activation for every single-token input, in batches."""
    if not isinstance(chunk, int) or chunk < 1:
        raise OptionError(f"scan_batch must be a positive integer; got {chunk!r}.")
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
