"""InversionCorpusResult: the exact totals of `invert_corpus`, with rates, a table and a plot.

Every number is a corpus total (a sum or a count over every prompt and process), and every
rate is a ratio of two totals, never an average of per-prompt averages. Margins (the
runner-up's distance minus the chosen token's, per decided position of the exact search)
are reduced as a sum, a count and a histogram over fixed bins (`MARGIN_EDGES`), so their
distribution, too, is exact under any sharding.
"""

import json
import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..validation import check_destination
from .engine import RunInfo

# Left edges of the margin bins: bin i holds margins in [MARGIN_EDGES[i], MARGIN_EDGES[i + 1]),
# the last bin [1e3, inf). A margin of inf (no other candidate was verified) is counted apart.
MARGIN_EDGES = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def margin_bins(margins: Float[Tensor, " n"]) -> Int[Tensor, " bins"]:
    """Counts of finite `margins` per bin of MARGIN_EDGES (negative ones fall in the first)."""
    edges = torch.tensor(MARGIN_EDGES[1:], dtype=torch.float64)
    index = torch.bucketize(margins.double(), edges, right=True)
    return torch.bincount(index, minlength=len(MARGIN_EDGES)).long()


def bin_labels() -> list[str]:
    """One label per margin bin: `[0, 0.0001)`, ..., `≥ 1000`."""
    edges = [f"{e:g}" for e in MARGIN_EDGES]
    return [f"[{a}, {b})" for a, b in zip(edges, edges[1:], strict=False)] + [f"≥ {edges[-1]}"]


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


@dataclass(frozen=True, kw_only=True)
class InversionCorpusResult:
    """How well `li.invert` recovers the corpus's prompts: exact totals over every prompt.

    A prompt is *exactly recovered* when every recovered token equals the window's token
    and the inversion's verdict is "verified"; `recovered_prompts` counts equal tokens
    alone (whatever the verdict).
    """

    method: str
    targets: tuple[str, ...]
    n_tokens: int  # tokens per prompt
    prompts: int  # prompts inverted (all processes)
    exactly_recovered: int  # all tokens equal and verified
    recovered_prompts: int  # all tokens equal
    verified_prompts: int  # verdict "verified"
    ambiguous_prompts: int  # verdict "ambiguous" (reproduces, but some position has a rival)
    correct_tokens: int
    position_correct: Int[Tensor, " n_tokens"]  # prompts whose token at each position was recovered
    position_unique: Int[Tensor, " n_tokens"]  # prompts whose position was decided uniquely (exact search)
    candidates_checked: int  # candidate tokens verified by forward passes, summed over positions (exact)
    closer_than_shift: int  # prompts closer to the target than a shifted input (the research's yardstick)
    distance_sum: float  # Σ end-to-end distance ‖O(a_g) − O(a)‖ over prompts
    seconds: float  # Σ seconds per inversion (each call's own timer)
    margin_sum: float  # Σ finite margins over decided positions
    margin_count: int  # decided positions with a finite margin
    margin_unrivalled: int  # decided positions with margin inf (a single candidate)
    margin_counts: Int[Tensor, " bins"]  # finite margins per bin of MARGIN_EDGES
    run: RunInfo

    # ----- rates: ratios of totals ---------------------------------------------------
    @property
    def exact_recovery_rate(self) -> float:
        """Fraction of prompts exactly recovered (every token equal and verified); NaN with no prompts."""
        return _ratio(self.exactly_recovered, self.prompts)

    @property
    def token_accuracy(self) -> float:
        """Fraction of all prompt tokens recovered; NaN with no prompts."""
        return _ratio(self.correct_tokens, self.prompts * self.n_tokens)

    @property
    def verified_rate(self) -> float:
        """Fraction of prompts whose verdict is "verified"; NaN with no prompts."""
        return _ratio(self.verified_prompts, self.prompts)

    @property
    def mean_seconds(self) -> float:
        """Mean seconds per prompt."""
        return _ratio(self.seconds, self.prompts)

    @property
    def mean_margin(self) -> float:
        """Mean finite runner-up margin over the decided positions; NaN when none has one."""
        return _ratio(self.margin_sum, self.margin_count)

    @property
    def mean_distance(self) -> float:
        """Mean end-to-end distance ‖O(a_g) − O(a)‖ per prompt; NaN with no prompts."""
        return _ratio(self.distance_sum, self.prompts)

    @property
    def position_recovery(self) -> Float[Tensor, " n_tokens"]:
        """Per position, the fraction of prompts whose token was recovered."""
        return self.position_correct.double() / max(self.prompts, 1)

    @property
    def margin_histogram(self) -> tuple[tuple[float, ...], Int[Tensor, " bins"]]:
        """(left bin edges, counts) of the finite margins; see MARGIN_EDGES."""
        return MARGIN_EDGES, self.margin_counts

    # ----- output ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every total, the rates (NaN as None), the margin bin edges and the run, as JSON-ready data."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "run"}
        data = {k: (v.tolist() if isinstance(v, Tensor) else list(v) if isinstance(v, tuple) else v)
                for k, v in data.items()}
        rates = ("exact_recovery_rate", "token_accuracy", "verified_rate", "mean_seconds", "mean_margin")
        data.update({k: _finite_or_none(getattr(self, k)) for k in rates})
        data["margin_edges"] = list(MARGIN_EDGES)
        data["run"] = self.run.to_dict()
        return data

    def to_json(self, path=None) -> str:
        """The totals, rates and run as JSON (NaN as null); written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        if path is not None:
            check_destination(path, name="path", example="inversion.json").write_text(text)
        return text

    def __str__(self) -> str:
        rows = [("prompts", f"{self.prompts} × {self.n_tokens} tokens"),
                ("exact recovery", f"{self.exact_recovery_rate:.3f}  ({self.exactly_recovered})"),
                ("token accuracy", f"{self.token_accuracy:.3f}  ({self.correct_tokens})"),
                ("verified", f"{self.verified_rate:.3f}  ({self.verified_prompts})"),
                ("mean margin", f"{self.mean_margin:.3g}"),
                ("s / prompt", f"{self.mean_seconds:.3g}")]
        head = f"invert_corpus: method={self.method!r}, target={', '.join(self.targets)}"
        return "\n".join([head] + [f"  {k:<15} {v}" for k, v in rows])

    def plot(self):
        """Per-position recovery rate, and the histogram of the exact search's margins."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from ..viz.heatmap import plotly_text

        fig = make_subplots(rows=1, cols=2, subplot_titles=("recovery by position", "runner-up margin"))
        positions = list(range(self.n_tokens))
        fig.add_trace(go.Bar(x=positions, y=self.position_recovery.tolist(), name="token recovered"), row=1, col=1)
        if self.method == "exact":
            unique = (self.position_unique.double() / max(self.prompts, 1)).tolist()
            fig.add_trace(go.Scatter(x=positions, y=unique, mode="lines+markers", name="unique"), row=1, col=1)
        labels, counts = bin_labels(), self.margin_counts.tolist()
        if self.margin_unrivalled:
            labels, counts = labels + ["∞ (no rival)"], counts + [self.margin_unrivalled]
        fig.add_trace(go.Bar(x=labels, y=counts, name="positions"), row=1, col=2)
        fig.update_xaxes(title_text="position", row=1, col=1)
        fig.update_yaxes(title_text="fraction of prompts", range=[0, 1.05], row=1, col=1)
        fig.update_xaxes(title_text="margin (L2)", row=1, col=2)
        fig.update_yaxes(title_text="positions", row=1, col=2)
        title = (f"{self.method} inversion of {', '.join(self.targets)}: {self.prompts} prompts, "
                 f"exact recovery {self.exact_recovery_rate:.3f}")
        return fig.update_layout(title=plotly_text(title))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


__all__ = ["MARGIN_EDGES", "InversionCorpusResult", "bin_labels", "margin_bins"]
