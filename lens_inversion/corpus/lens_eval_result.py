"""LensEvaluation: the corpus statistics of `li.evaluate_lens`, [lens, row] each, with a plot."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from jaxtyping import Float
from torch import Tensor

from ..errors import OptionError
from ..hooks.selfcheck import Verdict
from ..validation import check_choice, check_destination
from .engine import RunInfo

METRICS = ("bits_per_byte", "kl", "cross_entropy", "entropy", "top1_agreement")
_TITLES = {
    "bits_per_byte": "bits per byte (next token)",
    "kl": "KL(final ‖ lens), nats",
    "cross_entropy": "cross-entropy (next token), nats",
    "entropy": "entropy of the lens, nats",
    "top1_agreement": "top-1 agreement with the output",
}
PerLensRow = Float[Tensor, "lens row"]


@dataclass(frozen=True, kw_only=True)
class LensEvaluation:
    """Corpus means per [lens, row]: each a total over every real token divided by its count."""

    lenses: list[str]  # "logit", "tuned", "jacobian", "custom" (numbered when repeated)
    rows: list[str]  # "embed", "0", ..., "output"
    row_lenses: list[list[str]]  # what decoded each [lens, row]: the lens, "logit" (no translator) or "model"
    kl: PerLensRow
    cross_entropy: PerLensRow
    bits_per_byte: PerLensRow
    entropy: PerLensRow
    top1_agreement: PerLensRow
    tokens: int  # real tokens scored (KL, entropy, top-1)
    predicted: int  # tokens with a real next token (cross-entropy, bits per byte)
    bytes: int  # bytes of text those next tokens stand for
    bytes_method: str  # how bytes were counted: "byte-level", "sentencepiece" or "decoded"
    run: RunInfo
    checks: Sequence[Verdict] = field(default_factory=list)  # a tuple once preserves_model adds its checks

    def metric(self, name: str) -> PerLensRow:
        """The [lens, row] means of one of METRICS; OptionError for any other name."""
        check_choice("metric", name, METRICS)
        return getattr(self, name)

    def to_dict(self) -> dict:
        """Every metric as nested lists, with the labels, counts, run and self-check verdicts, for JSON."""
        out: dict[str, object] = {name: self.metric(name).tolist() for name in METRICS}
        out.update(lenses=self.lenses, rows=self.rows, row_lenses=self.row_lenses, tokens=self.tokens,
                   predicted=self.predicted, bytes=self.bytes, bytes_method=self.bytes_method,
                   run=self.run.to_dict(), checks=[str(v) for v in self.checks])
        return out

    def to_json(self, path=None) -> str:
        """The evaluation as JSON text; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            check_destination(path, name="path", example="evaluation.json").write_text(text)
        return text

    def __str__(self) -> str:
        width = max(8, *(len(n) for n in self.lenses))
        lines = [f"bits per byte over {self.tokens:,} tokens ({self.bytes:,} bytes, {self.run.world_size} process"
                 f"{'es' if self.run.world_size > 1 else ''})", f"{'row':>8} " + " ".join(f"{n:>{width}}" for n in self.lenses)]
        for j, row in enumerate(self.rows):
            lines.append(f"{row:>8} " + " ".join(f"{float(self.bits_per_byte[i, j]):>{width}.4f}"
                                                 for i in range(len(self.lenses))))
        return "\n".join(lines)

    def plot(self, *, metric: str = "bits_per_byte"):
        """One line per lens over the rows; hollow markers where a row was read by the identity."""
        import plotly.graph_objects as go

        values = self.metric(metric)
        fig = go.Figure()
        for i, name in enumerate(self.lenses):
            symbols = ["circle-open" if lens == "logit" and name != "logit" else "circle" for lens in self.row_lenses[i]]
            fig.add_trace(go.Scatter(x=self.rows, y=values[i].tolist(), mode="lines+markers", name=name,
                                     marker={"symbol": symbols, "size": 9}))
        fig.update_layout(title=f"{_TITLES[metric]} over {self.tokens:,} tokens", xaxis_title="row",
                          yaxis_title=_TITLES[metric], template="plotly_white")
        return fig

    def __post_init__(self) -> None:
        if self.kl.shape != (len(self.lenses), len(self.rows)):
            raise OptionError(f"kl has shape {tuple(self.kl.shape)}; expected [lenses, rows].")


__all__ = ["METRICS", "LensEvaluation"]
