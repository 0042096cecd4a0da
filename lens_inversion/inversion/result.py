"""Result types shared by every inversion method (gradient, exact) and by walks."""

from dataclasses import dataclass, field

from jaxtyping import Float, Int
from torch import Tensor


@dataclass(frozen=True, kw_only=True)
class PositionReport:
    """How one position was decided by a verified (exact) search."""

    position: int
    token: int
    candidates_checked: int
    margin: float  # second-best distance minus best distance (inf when only one candidate)
    best_distance: float
    seconds: float
    unique: bool  # the best beats the runner-up by more than the tolerance
    observed: bool = True  # False for positions hidden by the target's token slice


@dataclass(frozen=True, kw_only=True)
class InversionResult:
    """Recovered input tokens for a target activation, with the evidence for them.

    Scalar distances are means over the batch of prompts; the per-prompt values are in
    `distances`, `shifted_distances` and `decoded_distances` (gradient methods).
    """

    method: str
    targets: tuple[str, ...]
    tokens: Int[Tensor, "batch pos"]
    str_tokens: list[list[str]]
    top_k_tokens: Int[Tensor, "batch pos k"] | None = None
    top_k_texts: list[list[str]] = field(default_factory=list)
    true_tokens: Int[Tensor, "batch pos"] | None = None
    token_accuracy: float | None = None  # fraction of true tokens recovered; a leading BOS is not scored
    loss_history: Float[Tensor, " steps"] | None = None
    distance: float | None = None  # ‖O(a_g) − O(a)‖ under the chosen loss
    shifted_distance: float | None = None  # ‖O(a′) − O(a)‖, a′ = a + N(0, 1/20)
    positions: tuple[PositionReport, ...] = ()
    seconds: float = 0.0
    texts: list[str] = field(default_factory=list)
    # Gradient methods only.
    embeddings: Float[Tensor, "batch pos d_model"] | None = None  # the optimised input, embedding-hook space
    distances: Float[Tensor, " batch"] | None = None
    shifted_distances: Float[Tensor, " batch"] | None = None
    decoded_distance: float | None = None  # distance of the decoded tokens' output
    decoded_distances: Float[Tensor, " batch"] | None = None
    restart_distances: Float[Tensor, "batch restarts"] | None = None
    restart_decoded_distances: Float[Tensor, "batch restarts"] | None = None
    steps_run: int = 0
    options: dict = field(default_factory=dict)
    checks: tuple = field(default=(), repr=False, compare=False)  # self-check verdicts the call relied on

    @property
    def text(self) -> str:
        """The first recovered text."""
        return self.texts[0] if self.texts else ""

    @property
    def closer_than_shift(self) -> bool | None:
        """The research's yardstick: closer to the target than a slightly shifted input is."""
        if self.distance is None or self.shifted_distance is None:
            return None
        if self.distances is not None and self.shifted_distances is not None:
            return bool((self.distances < self.shifted_distances).all())
        return self.distance < self.shifted_distance

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"targets={list(self.targets)}", f"texts={self.texts!r}"]
        for name in ("token_accuracy", "distance", "shifted_distance", "decoded_distance"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value:.4g}")
        if self.steps_run:
            parts.append(f"steps_run={self.steps_run}")
        return f"InversionResult({', '.join(parts)})"

    def plot(self):
        """Loss per optimisation step (log scale) with the shifted-input yardstick as a line."""
        import plotly.graph_objects as go

        fig = go.Figure()
        if self.loss_history is not None:
            fig.add_trace(go.Scatter(y=self.loss_history.tolist(), mode="lines", name="loss"))
        if self.shifted_distance is not None:
            fig.add_hline(y=self.shifted_distance, line_dash="dash", annotation_text="shifted input e′")
        fig.update_layout(title=f"{self.method} inversion of {', '.join(self.targets)}", xaxis_title="step",
                          yaxis_title="distance", yaxis_type="log")
        return fig


@dataclass(frozen=True, kw_only=True)
class WalkResult:
    """A manifold walk: the input moves while the target output should stay put.

    Step 0 is the starting input. Distances are L1 norms against step 0, and
    r = ‖e − e_i‖₁ / ‖O(e) − O(e_i)‖₁ (the research's ratio; NaN at step 0).
    """

    kind: str  # "orthogonal" or "clamped"
    target: str
    texts: list[str]
    tokens: Int[Tensor, "step pos"]
    embeddings: Float[Tensor, "step pos d_model"]  # embedding-hook space
    input_distances: Float[Tensor, " step"]
    output_distances: Float[Tensor, " step"]
    ratios: Float[Tensor, " step"]
    orthogonality: Float[Tensor, " walk_step"] | None = None  # cos(g, v) of each orthogonal step
    dtype: str = "float32"

    def __repr__(self) -> str:
        last = float(self.ratios[-1]) if len(self.ratios) > 1 else float("nan")
        ortho = "" if self.orthogonality is None else f", max |g·v|={float(self.orthogonality.abs().max()):.2e}"
        return (
            f"WalkResult(kind={self.kind!r}, target={self.target!r}, steps={len(self.texts) - 1}, "
            f"final r={last:.4g}{ortho}, texts={self.texts[:1] + self.texts[-1:]!r})"
        )

    def plot(self):
        """Input distance, output distance and their ratio per step."""
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_trace(go.Scatter(y=self.input_distances.tolist(), name="‖e − e_i‖₁"))
        fig.add_trace(go.Scatter(y=self.output_distances.tolist(), name="‖O(e) − O(e_i)‖₁"))
        fig.add_trace(go.Scatter(y=self.ratios.tolist(), name="r", yaxis="y2", text=self.texts, mode="lines+markers"))
        return fig.update_layout(
            title=f"{self.kind} walk on {self.target}", xaxis_title="step", yaxis_title="L1 distance",
            yaxis2=dict(title="r", overlaying="y", side="right"),
        )
