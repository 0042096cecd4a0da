"""TokenTrajectoryResult: per row × position probabilities of a token set, a line plot and JSON."""

import json
import math
from dataclasses import dataclass, field, fields
from typing import Literal

import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import OptionError
from ..validation import check_choice, check_int
from ..viz.heatmap import plotly_text, wrap_title
from .result import lens_title

TrajectoryMetric = Literal["prob", "rank"]
TRAJECTORY_METRICS = ("prob", "rank")
_TENSORS = {"prob": torch.float32, "rank": torch.float32, "set_prob": torch.float32, "set_rank": torch.float32,
            "tokens": torch.long, "valid": torch.bool}


def _visible(token: str) -> str:
    """A token as a legend shows it: spaces and newlines made visible."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def _plain(value):
    """Nested lists of a tensor for JSON, NaN as None."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _unplain(value):
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return float("nan") if value is None else value


@dataclass(frozen=True, kw_only=True, eq=False)  # tensors have no single truth value
class TokenTrajectoryResult:
    """Probabilities and ranks of a token set at every lens row ([row, pos, ...]; [batch, ...] for a list).

    Attributes:
        prob: [*batch, row, pos, token] probability of each token of the set.
        rank: [*batch, row, pos, token] its rank (1 = top; 1 + tokens strictly more probable).
        set_prob: [*batch, row, pos] total probability of the set's distinct tokens.
        set_rank: [*batch, row, pos] the best rank among the set's tokens.
        tokens: [*batch, pos] the prompt's ids at the columns (−1 on padding); valid: not padding.
        str_tokens: the prompt's token strings per column (nested for a batch);
            prompt_lengths: real tokens per prompt.
        token_ids, token_strings: what was scored, one per entry of `tokens` as given
            (token_inputs); truncated: entries whose string split into several tokens and
            were scored by their first piece (multi_token="first").
        row_labels, row_sites: one label and (site, layer) per row, embedding first, output last.
        row_lenses: per row, what decoded it ("logit" where the lens has no translator, "model"
            for the output row); lens: "logit", "tuned", "jacobian" or "custom".
        positions: the prompt positions of the columns.
    Padding cells hold NaN.
    """

    checks: tuple = field(default=(), repr=False, compare=False)  # self-check verdicts the call relied on

    prob: Float[Tensor, "*batch row pos token"]
    rank: Float[Tensor, "*batch row pos token"]
    set_prob: Float[Tensor, "*batch row pos"]
    set_rank: Float[Tensor, "*batch row pos"]
    tokens: Int[Tensor, "*batch pos"]
    valid: Bool[Tensor, "*batch pos"]
    str_tokens: list
    prompt_lengths: "int | list[int]"
    token_ids: list[int]
    token_strings: list[str]
    token_inputs: list
    truncated: list[bool]
    row_labels: list[str]
    row_sites: list[tuple[str, int | None]]
    row_lenses: list[str]
    lens: str
    positions: list[int]
    batched: bool

    def __repr__(self) -> str:
        batch = f"{self.prob.shape[0]} prompts, " if self.batched else ""
        cut = f", {sum(self.truncated)} scored by their first piece" if any(self.truncated) else ""
        return (
            f"TokenTrajectoryResult(lens={self.lens!r}, {batch}{len(self.row_labels)} rows × {len(self.positions)} "
            f"positions, tokens {self.token_strings}{cut})"
        )

    @property
    def lens_title(self) -> str:
        """The lens's name as plots show it, naming rows that fell back to the logit lens."""
        return lens_title(self.lens, self.row_labels, self.row_lenses)

    def _column(self, position: int, index: int) -> int:
        """The column of prompt `position` (negative: from the end of that prompt)."""
        n = self.prob.shape[0] if self.batched else 1
        if self.batched and not -n <= index < n:
            raise OptionError(f"index={index} is out of range for a batch of {n} prompts (valid: 0..{n - 1}).")
        lengths = self.prompt_lengths
        length = lengths[index] if isinstance(lengths, list) else lengths  # a list exactly when batched
        check_int("position", position, low=-length, high=length - 1)
        pos = position % length
        if pos not in self.positions:
            raise OptionError(f"position={position} (prompt position {pos}) was not scored; "
                              f"scored positions: {self.positions}.")
        return self.positions.index(pos)

    def plot(self, *, position: int = -1, metric: TrajectoryMetric = "prob", index: int = 0) -> go.Figure:
        """One line per token across rows at one prompt position, plus the set (total or best rank).

        Args:
            position: the prompt position (negative counts from the end of the prompt); it
                must be one of `positions`.
            metric: "prob" (linear axis, with the set's total) or "rank" (log axis, best at
                the top, with the set's best rank).
            index: which prompt of a batch.
        """
        check_choice("metric", metric, TRAJECTORY_METRICS)
        col = self._column(position, index)
        pick = (lambda t: t[index]) if self.batched else (lambda t: t)
        values = pick(getattr(self, metric))[:, col]  # [row, token]
        total = pick(self.set_prob if metric == "prob" else self.set_rank)[:, col]
        str_tokens = self.str_tokens[index] if self.batched else self.str_tokens
        fig = go.Figure()
        for j, (text, cut) in enumerate(zip(self.token_strings, self.truncated, strict=True)):
            name = plotly_text(_visible(text) + (" (first piece)" if cut else "") + f" · {self.token_ids[j]}")
            fig.add_trace(go.Scatter(x=self.row_labels, y=values[:, j].tolist(), mode="lines+markers", name=name,
                                     hovertemplate=f"row %{{x}}: {metric} %{{y:.4g}}<extra>{name}</extra>"))
        set_name = "set total" if metric == "prob" else "set best rank"
        fig.add_trace(go.Scatter(x=self.row_labels, y=total.tolist(), mode="lines", name=set_name,
                                 line=dict(dash="dash", color="black"),
                                 hovertemplate=f"row %{{x}}: %{{y:.4g}}<extra>{set_name}</extra>"))
        word = "probability" if metric == "prob" else "rank"
        where = f"position {self.positions[col]} ({_visible(str_tokens[col])})"
        fig.update_layout(
            title=wrap_title(f"{self.lens_title}: {word} of each token after {where}"),
            xaxis_title="row", xaxis_type="category", yaxis_title=word, height=420, legend=dict(orientation="h", y=-0.2),
        )
        if metric == "rank":
            fig.update_yaxes(type="log", autorange="reversed")
        else:
            fig.update_yaxes(range=[0, 1.02])
        return fig

    def to_json(self) -> str:
        """The numbers and labels as a JSON string (NaN as null); `from_json` reads it back."""
        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "checks":
                continue
            data[f.name] = _plain(value.tolist()) if isinstance(value, Tensor) else value
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "TokenTrajectoryResult":
        """The result `to_json` wrote (without the self-check verdicts)."""
        data = json.loads(text)
        for name, dtype in _TENSORS.items():
            data[name] = torch.tensor(_unplain(data[name]), dtype=dtype)
        data["row_sites"] = [tuple(site) for site in data["row_sites"]]
        return cls(**data)


__all__ = ["TRAJECTORY_METRICS", "TokenTrajectoryResult"]
