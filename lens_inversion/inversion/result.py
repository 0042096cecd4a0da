"""Result types shared by every inversion method (gradient, exact) and by walks."""

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

from jaxtyping import Float, Int
from torch import Tensor

from ..callsite import user_stacklevel
from ..deprecation import warn_renamed

VerdictStatus = Literal["verified", "not verified", "ambiguous"]


class InversionWarning(UserWarning):
    """An exact inversion finished without proving its answer (not verified or ambiguous)."""


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
    tolerance: float = math.nan  # the largest distance that counts as reproducing this position

    @property
    def reproduced(self) -> bool:
        """The chosen token reproduces the observation within the tolerance."""
        return self.best_distance <= self.tolerance

    @property
    def decided(self) -> bool:
        """Something observed depends on this token (False past the target's last position)."""
        return self.candidates_checked > 0


@dataclass(frozen=True, kw_only=True)
class InversionVerdict:
    """Whether the recovered input provably reproduces the target, with the evidence.

    "verified": every position reproduces the observation within its tolerance and no
    other token does; "ambiguous": it reproduces, but some position has a rival within
    the tolerance or is not observed at all; "not verified": it does not reproduce.
    """

    status: VerdictStatus
    worst_distance: float  # the largest distance left (per position for exact, per prompt for gradient)
    tolerance: float  # the tolerance that distance is held to
    worst_margin: float  # the smallest runner-up margin (exact; NaN for gradient methods)
    reason: str

    @property
    def verified(self) -> bool:
        """Whether the status is "verified"."""
        return self.status == "verified"

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


def exact_verdict(positions: "tuple[PositionReport, ...]", end_to_end: Tensor, end_tolerance: Tensor) -> InversionVerdict:
    """Judge an exact search from its per-position evidence and the end-to-end distances."""
    decided = [r for r in positions if r.decided]
    margin = min((r.margin for r in decided), default=math.nan)
    worst = max(decided, key=lambda r: r.best_distance - r.tolerance, default=None)
    gap = (end_to_end - end_tolerance).max()
    if worst is not None and not worst.reproduced:
        failed = [r.position for r in decided if not r.reproduced]
        return InversionVerdict(
            status="not verified", worst_distance=worst.best_distance, tolerance=worst.tolerance, worst_margin=margin,
            reason=f"{len(failed)} of {len(decided)} positions ({_listed(failed)}) reproduced nothing within the "
                   f"tolerance (worst: position {worst.position}, distance {worst.best_distance:.3g} > "
                   f"{worst.tolerance:.3g}); no input searched gives this activation")
    worst_end, worst_tol = float(end_to_end.max()), float(end_tolerance[end_to_end.argmax()])
    if float(gap) > 0:
        return InversionVerdict(
            status="not verified", worst_distance=worst_end, tolerance=worst_tol, worst_margin=margin,
            reason=f"the recovered input's end-to-end distance {worst_end:.3g} exceeds its tolerance {worst_tol:.3g}")
    undecided = [r.position for r in positions if not r.decided]
    rivals = [r for r in decided if not r.unique]
    if undecided or rivals:
        what = [f"{_positions(undecided)} not observed by the target"] if undecided else []
        what += [f"position {r.position} has a rival within the tolerance (margin {r.margin:.3g})" for r in rivals[:3]]
        return InversionVerdict(status="ambiguous", worst_distance=worst_end, tolerance=worst_tol, worst_margin=margin,
                                reason="; ".join(what))
    return InversionVerdict(status="verified", worst_distance=worst_end, tolerance=worst_tol, worst_margin=margin,
                            reason=f"every position reproduced and unique (smallest margin {margin:.3g})")


def _listed(items: list[int], most: int = 6) -> str:
    shown = ", ".join(map(str, items[:most]))
    return shown + (f", … {len(items) - most} more" if len(items) > most else "")


def _positions(items: list[int]) -> str:
    return f"position {items[0]} is" if len(items) == 1 else f"positions {_listed(items)} are"


def gradient_verdict(decoded_gap: Tensor, scale: Tensor, relative: float) -> InversionVerdict:
    """Judge a gradient result: do its decoded tokens reproduce the target (L2, relative tolerance)?"""
    tol = relative * scale + 1e-6
    b = int((decoded_gap - tol).argmax())
    worst, limit = float(decoded_gap[b]), float(tol[b])
    if worst <= limit:
        return InversionVerdict(status="verified", worst_distance=worst, tolerance=limit, worst_margin=math.nan,
                                reason="the decoded tokens reproduce the target activation")
    return InversionVerdict(
        status="not verified", worst_distance=worst, tolerance=limit, worst_margin=math.nan,
        reason=f"the decoded tokens' activation is {worst:.3g} from the target (tolerance {limit:.3g}); gradient "
               "descent gives no exactness guarantee: use method=\"exact\" for a verified answer")


def warn_unverified(verdict: InversionVerdict) -> None:
    """Say so when an exact search did not prove its answer (never silently wrong), at the user's call."""
    if not verdict.verified:
        warnings.warn(f"Exact inversion is {verdict}.", InversionWarning, stacklevel=user_stacklevel())


@dataclass(frozen=True, kw_only=True)
class GradientTrace:
    """What gradient descent did (methods "embedding" and "direct"); tensors on the CPU."""

    embeddings: Float[Tensor, "batch pos d_model"]  # the optimised input of the kept restart, embedding-hook space
    top_k_tokens: Int[Tensor, "batch pos k"]
    top_k_texts: list[list[str]]
    loss_history: Float[Tensor, " steps"] | None  # mean loss of the kept restarts per step (None: no step run)
    decoded_distance: float  # mean over prompts of the decoded tokens' distance
    decoded_distances: Float[Tensor, " batch"]
    restart_distances: Float[Tensor, "batch restarts"]
    restart_decoded_distances: Float[Tensor, "batch restarts"]
    steps_run: int


@dataclass(frozen=True, kw_only=True)
class ExactTrace:
    """How the verified search decided each position (method "exact")."""

    positions: tuple[PositionReport, ...]  # one per position of every prompt, prompt after prompt


Trace = GradientTrace | ExactTrace

def _moved_field(name: str, default: object) -> property:
    """A deprecated top-level field that now lives at `trace.<name>` (warns, naming the new path)."""

    def getter(self):
        warn_renamed(name, f"trace.{name}", what="field")
        return getattr(self.trace, name, default)

    return property(getter, doc=f"Deprecated: use `trace.{name}`.")


@dataclass(frozen=True, kw_only=True)
class InversionResult:
    """Recovered input tokens for a target activation, with the evidence for them.

    The common part (tokens, texts, accuracy, distances, verdict) means the same for every
    method; what only one method family produces lives in `trace`: a `GradientTrace`
    (top-k decodings, loss history, restarts) or an `ExactTrace` (per-position reports).
    Every tensor is on the CPU, whatever the method and the model's device. Scalar
    distances are means over the batch of prompts; the per-prompt values are in
    `distances` and `shifted_distances`.
    """

    method: str
    targets: tuple[str, ...]
    tokens: Int[Tensor, "batch pos"]
    str_tokens: list[list[str]]
    texts: list[str] = field(default_factory=list)
    true_tokens: Int[Tensor, "batch pos"] | None = None
    token_accuracy: float | None = None  # fraction of true tokens recovered; a leading BOS is not scored
    distance: float | None = None  # ‖O(a_g) − O(a)‖ under the chosen loss (exact: L2)
    distances: Float[Tensor, " batch"] | None = None
    shifted_distance: float | None = None  # ‖O(a′) − O(a)‖, a′ = a + N(0, 1/20)
    shifted_distances: Float[Tensor, " batch"] | None = None
    verdict: InversionVerdict | None = None  # does the recovered input reproduce the target?
    seconds: float = 0.0
    options: dict = field(default_factory=dict)
    trace: Trace | None = None  # the method-specific evidence
    checks: tuple = field(default=(), repr=False, compare=False)  # self-check verdicts the call relied on

    # Deprecated spellings of the fields that moved into `trace` (one release).
    top_k_tokens = _moved_field("top_k_tokens", None)
    top_k_texts = _moved_field("top_k_texts", [])
    loss_history = _moved_field("loss_history", None)
    positions = _moved_field("positions", ())
    embeddings = _moved_field("embeddings", None)
    decoded_distance = _moved_field("decoded_distance", None)
    decoded_distances = _moved_field("decoded_distances", None)
    restart_distances = _moved_field("restart_distances", None)
    restart_decoded_distances = _moved_field("restart_decoded_distances", None)
    steps_run = _moved_field("steps_run", 0)

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
        for name in ("token_accuracy", "distance", "shifted_distance"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value:.4g}")
        if isinstance(self.trace, GradientTrace):
            parts.append(f"decoded_distance={self.trace.decoded_distance:.4g}")
            if self.trace.steps_run:
                parts.append(f"steps_run={self.trace.steps_run}")
        if self.verdict is not None:
            parts.append(f"verdict={self.verdict.status!r}")
        return f"InversionResult({', '.join(parts)})"

    def plot(self):
        """Loss per optimisation step (log scale) with the shifted-input yardstick as a line."""
        import plotly.graph_objects as go

        from ..viz.heatmap import plotly_text

        fig = go.Figure()
        history = getattr(self.trace, "loss_history", None)
        if history is not None:
            fig.add_trace(go.Scatter(y=history.tolist(), mode="lines", name="loss"))
        if self.shifted_distance is not None:
            fig.add_hline(y=self.shifted_distance, line_dash="dash", annotation_text="shifted input e′")
        fig.update_layout(title=plotly_text(f"{self.method} inversion of {', '.join(self.targets)}"), xaxis_title="step",
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

        from ..viz.heatmap import plotly_text

        fig = go.Figure()
        fig.add_trace(go.Scatter(y=self.input_distances.tolist(), name="‖e − e_i‖₁"))
        fig.add_trace(go.Scatter(y=self.output_distances.tolist(), name="‖O(e) − O(e_i)‖₁"))
        fig.add_trace(go.Scatter(y=self.ratios.tolist(), name="r", yaxis="y2",
                                 text=[plotly_text(t) for t in self.texts], mode="lines+markers"))
        return fig.update_layout(
            title=plotly_text(f"{self.kind} walk on {self.target}"), xaxis_title="step", yaxis_title="L1 distance",
            yaxis2=dict(title="r", overlaying="y", side="right"),
        )
