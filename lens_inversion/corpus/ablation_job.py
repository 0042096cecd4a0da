"""`li.ablation_corpus`: the mean effect of ablating one position, per layer × ablation, over a corpus.

Prompts: one per document, BOS first, cut to the first `max_tokens_per_prompt` ids
(`prompt_items.py`). For each prompt and each ablation in `specs` ("zero", "mean",
"resample": `li.ablation_sweep`'s own vocabulary), `li.ablation_sweep(model, ids,
ablation=spec, target=<target's site and features, every scored position>, layers=layers, metric=metric)`
ablates each (layer, position) cell in turn; a cell's effect is the sweep's value minus
the clean run's (ablated − clean: for "kl" the KL itself, for "prob" / "logit_diff" the
change of the clean top-1 answer's probability / logit lead, for "cross_entropy" the change
of the mean next-token loss). Scored positions are every position but BOS (unless
`include_bos`); readout metrics read the prediction at the prompt's last token.

Effects are reduced exactly (float64 sums, int64 counts) by [spec, layer, distance], the
distance d = n - 1 - p of the ablated position from the last token. The mean effect of a
(spec, layer) is Σ effect / Σ cells over every scored position of every prompt (each
ablated token weighs the same), never an average of per-prompt averages.

"mean" replaces a cell by the mean of `reference`'s activations when a reference is given,
else by the mean over the prompt's own positions; "resample" takes the activation of a
`reference` row (drawn with `seed`) at the same position, so it needs a reference at least
`max_tokens_per_prompt` tokens long. "truncate" has kept widths, not positions, for
columns; use `li.ablation_sweep` for it.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..ablation.sweep import METRICS, MetricName, ablation_sweep
from ..deprecation import Rename, renamed_options, renamed_values
from ..errors import OptionError
from ..hooks.adapter import adapter_for
from ..hooks.preserve import preserves_model
from ..hooks.sites import Site
from ..hooks.targets import Target
from ..validation import check_bool, check_choice, check_destination, check_int, check_seed, read_prompt
from .distributed import joined
from .engine import Loop, RunInfo, run_items
from .prompt_items import check_prompt_options, corpus_prompts, prompt_digest, prompt_size, scored_from
from .runner import check_run_options

SPECS = ("zero", "mean", "resample")
SpecName = Literal["zero", "mean", "resample"]
PLOT_KINDS = ("layers", "distance")
PlotKind = Literal["layers", "distance"]
SITES = (Site.EMBED, Site.RESID_PRE, Site.RESID_MID, Site.RESID_POST, Site.ATTN_OUT, Site.MLP_OUT)


@dataclass(frozen=True, kw_only=True)
class AblationCorpusResult:
    """Exact corpus totals of ablation effects by [spec, layer, distance from the last token].

    Attributes:
        sum_by_distance: [spec, layer, distance] Σ (ablated − clean) over the cells at that distance.
        count_by_distance: [distance] ablated positions at each distance (the same for every
            spec and layer: every cell of every prompt is computed).
        clean_sum: Σ over prompts of the clean run's metric (0 for "kl").
        specs, layers, site, metric: the sweep's ablations (rows of `mean_effect`), layers, site, metric.
        options: the other options (reference digest, include_bos, seed, prompt options).
        run: how the job ran (prompts, tokens, processes, resumed prompts).
    """

    checks: tuple = field(default=(), repr=False, compare=False)  # self-check verdicts the calls relied on
    sum_by_distance: Float[Tensor, "spec layer distance"]
    count_by_distance: Int[Tensor, " distance"]
    clean_sum: float
    specs: tuple[str, ...]
    layers: list[int]
    site: str
    metric: str
    options: dict
    run: RunInfo

    @property
    def count(self) -> int:
        """Ablated cells behind each (spec, layer) mean: every scored position of every prompt."""
        return int(self.count_by_distance.sum())

    @property
    def mean_effect(self) -> Float[Tensor, "spec layer"]:
        """Mean effect (ablated − clean) of ablating one position, per spec and layer."""
        return self.sum_by_distance.sum(-1) / max(self.count, 1)

    @property
    def mean_by_distance(self) -> Float[Tensor, "spec layer distance"]:
        """Mean effect per spec, layer and distance of the ablated position (NaN where none was that far)."""
        n = self.count_by_distance
        return torch.where(n > 0, self.sum_by_distance / n.clamp(min=1).double(), float("nan"))

    @property
    def mean_clean(self) -> float:
        """The clean metric, averaged over prompts."""
        return self.clean_sum / max(self.run.items, 1)

    def to_dict(self) -> dict:
        """The result as JSON-ready data: plain lists, NaN means as None, the run included."""
        by_d = [[[None if v != v else v for v in row] for row in spec] for spec in self.mean_by_distance.tolist()]
        return {"specs": list(self.specs), "layers": self.layers, "site": self.site, "metric": self.metric,
                "options": self.options, "count": self.count, "mean_effect": self.mean_effect.tolist(),
                "count_by_distance": self.count_by_distance.tolist(), "sum_by_distance": self.sum_by_distance.tolist(),
                "mean_by_distance": by_d, "clean_sum": self.clean_sum, "run": self.run.to_dict()}

    def to_json(self, path=None) -> str:
        """The result as JSON (written to `path` when given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            check_destination(path, name="path", example="ablation.json").write_text(text)
        return text

    def __str__(self) -> str:
        lines = [f"ablation_corpus of {self.site}, metric {self.metric} (ablated − clean): {self.run.items} prompts, "
                 f"{self.count} ablated positions per layer; mean clean {self.metric} {self.mean_clean:.4g}",
                 f"{'layer':>6} " + " ".join(f"{s:>10}" for s in self.specs)]
        for j, layer in enumerate(self.layers):
            lines.append(f"{layer:>6} " + " ".join(f"{float(self.mean_effect[i, j]):>10.4g}" for i in range(len(self.specs))))
        return "\n".join(lines)

    def plot(self, *, kind: PlotKind = "layers", spec: str | None = None):
        """Heatmap of the mean effect: layer × spec (`kind="layers"`), or layer × distance for one spec."""
        import plotly.graph_objects as go

        check_choice("kind", kind, PLOT_KINDS)
        x: list[str] | list[int]
        if kind == "layers":
            z, x, x_title = self.mean_effect.T.tolist(), list(self.specs), "ablation"
        else:
            spec = self.specs[0] if spec is None else spec
            check_choice("spec", spec, self.specs)
            z, x_title = self.mean_by_distance[self.specs.index(spec)].tolist(), f"distance from the last token ({spec})"
            x = list(range(self.count_by_distance.numel()))
        fig = go.Figure(go.Heatmap(z=z, x=x, y=[f"layer {lay}" for lay in self.layers], colorscale="Viridis",
                                   colorbar=dict(title=f"Δ {self.metric}"),
                                   hovertemplate="%{y}, %{x}<br>mean effect %{z:.4g}<extra></extra>"))
        fig.update_layout(title=f"Mean effect of ablating one {self.site} position over {self.run.items} prompts",
                          xaxis_title=x_title, yaxis_title="ablated layer")
        fig.update_yaxes(autorange="reversed")
        return fig


def _check_specs(specs) -> tuple[SpecName, ...]:
    specs = (specs,) if isinstance(specs, str) else specs
    if not isinstance(specs, (list, tuple)) or not specs:
        raise OptionError(f"specs must be an ablation or a non-empty list of them from {SPECS}; got {specs!r}.")
    for spec in specs:
        if spec == "truncate":
            raise OptionError("specs='truncate' sweeps kept widths, not positions; choose from 'zero', 'mean', "
                              "'resample', and use li.ablation_sweep(..., ablation='truncate') for widths.")
        check_choice("specs", spec, SPECS)
    if len(set(specs)) != len(specs):
        raise OptionError(f"specs lists an ablation twice: {list(specs)!r}; give each once.")
    return tuple(specs)


def _check_target_layers(adapter, target, layers) -> tuple[Target, list[int]]:
    """The ablated site and features (positions: every scored one) and the layers swept."""
    target = Target.layerless(Site.RESID_POST) if target is None else Target.parse(target, layer_optional=True)
    site = target.site
    if site not in SITES:
        raise OptionError(f"site={site.value!r} cannot be ablated; choose one of: {', '.join(s.value for s in SITES)}.")
    if target.tokens != slice(None) or target.batch != slice(None):
        raise OptionError(f"ablation_corpus ablates every scored position of every prompt; give {site.value!r} "
                          f"with a feature slice at most, not {target}.")
    if site is Site.EMBED:
        return target, [0]
    if target.layer is not None:
        if layers is not None:
            raise OptionError(f"target {target} names layer {target.layer}; give the layer there or in layers=, not both.")
        layers = [target.layer]
    if layers is not None and (isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers):
        raise OptionError(f"layers must be None (every layer) or a non-empty list of layer indices; got {layers!r}.")
    chosen = [adapter.check_layer(lay) for lay in (range(adapter.n_layers) if layers is None else layers)]
    if len(set(chosen)) != len(chosen):
        assert layers is not None  # narrowing: every layer of the model, listed once, has no repeats
        raise OptionError(f"layers lists a layer twice: {list(layers)!r}; give each once.")
    return Target.layerless(site, features=target.features), chosen


def _reference_digest(adapter, reference, specs, max_tokens: int) -> str | None:
    """A digest of the reference texts for the checkpoint, after checking them against the specs."""
    if reference is None:
        if "resample" in specs:
            raise OptionError("specs with 'resample' need reference= (a text or list of texts to draw activations from).")
        return None
    texts = [reference] if isinstance(reference, str) else reference
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise OptionError(f"reference must be None, a text or a non-empty list of texts; got {type(reference).__name__}.")
    if not {"mean", "resample"} & set(specs):
        raise OptionError(f"reference= applies only to the specs 'mean' and 'resample'; specs are {list(specs)!r}.")
    longest = int(read_prompt(adapter, list(texts)).lengths.max())
    if "resample" in specs and longest < max_tokens:
        raise OptionError(f"'resample' takes each position from a reference row at least as long; the longest "
                          f"reference has {longest} tokens but prompts may have max_tokens_per_prompt={max_tokens}. "
                          "Give a longer reference or a smaller max_tokens_per_prompt.")
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()


def _statistic(adapter, model, *, specs, sweep_options: dict, reference, include_bos: bool, n_bins: int):
    """The per-prompt step: one sweep per spec, effects summed by [spec, layer, distance]."""

    def step(prompt: Tensor) -> dict:
        first, n = scored_from(adapter, prompt, include_bos=include_bos), len(prompt)
        distance = torch.arange(n - 1 - first, -1, -1)
        counts = torch.zeros(n_bins, dtype=torch.int64).index_add_(0, distance, torch.ones_like(distance))
        effects, clean = [], 0.0
        for spec in specs:
            ref = reference if spec in ("mean", "resample") else None
            target = Target.layerless(sweep_options["target"].site, tokens=slice(first, None),
                                      features=sweep_options["target"].features)
            sweep = ablation_sweep(model, prompt, ablation=spec, reference=ref, progress=False,
                                   **{**sweep_options, "target": target})
            effect = sweep.values.double() - sweep.clean
            effects.append(torch.zeros(effect.shape[0], n_bins, dtype=torch.float64).index_add_(1, distance, effect))
            clean = sweep.clean
        return {"effect": torch.stack(effects), "n": counts, "clean": torch.tensor(clean, dtype=torch.float64)}

    return step


def _check_scalars(metric, include_bos, batch_size, seed) -> MetricName:
    """Check the plain options; return the metric."""
    check_choice("metric", metric, METRICS)
    check_bool("include_bos", include_bos)
    check_int("batch_size", batch_size, low=1, allow_none=True)
    check_seed(seed, allow_none=False)
    return metric


def _site_as_target(site) -> Target:
    """The old site= value as the layerless target of that site (an unknown site names the valid ones)."""
    return Target.layerless(site)


@renamed_options(site=Rename("target", _site_as_target, "a Target or its string form, e.g. 'attn_out[:, :, :64]'"))
@renamed_values(metric={"loss": "cross_entropy"})
@preserves_model
def ablation_corpus(model, corpus, /, *, specs: "SpecName | Sequence[SpecName]" = ("zero", "mean"),
                    target: "Target | str | None" = None, layers: Sequence[int] | None = None,
                    metric: MetricName = "kl", n_prompts: int | None = 64, max_tokens_per_prompt: int = 32, text_key: str = "text",
                    reference: "str | list[str] | None" = None, include_bos: bool = False,
                    batch_size: int | None = None, seed: int = 0, checkpoint=None, checkpoint_every: int = 10,
                    progress: bool = True) -> AblationCorpusResult:
    """Sweep each prompt of a corpus with each ablation and reduce the effects per layer × spec.

    Args:
        model: a TransformerBridge or HookedTransformer.
        corpus: texts, .txt/.jsonl paths or a datasets.Dataset (see `lens.token_stream`).
        specs: ablations from "zero", "mean", "resample" (one string or a list).
        target: the ablated activation, a Target or its string form: its site (resid_pre,
            resid_mid, resid_post, attn_out, mlp_out, embed; default resid_post), optionally a
            layer and a feature slice; every scored position is ablated (`site=` before 0.3).
        layers: the ablated layers when the target names none (None: every layer; embed has the one row 0).
        metric: "kl", "prob", "logit_diff" or "cross_entropy" ("loss" before 0.3), as `li.ablation_sweep`.
        batch_size: rows per forward, as `li.ablation_sweep`.
        seed: the reference row draw of "resample".
        n_prompts: prompts to sweep, one per document in corpus order (None: every document).
        max_tokens_per_prompt: each prompt is its document's first this-many ids, BOS included.
        text_key: the text field of .jsonl lines and dataset rows.
        reference: text(s) for "mean" (optional) and "resample" (required).
        include_bos: ablate the BOS position too.
        checkpoint: a file to save progress to and resume from.
        checkpoint_every: prompts between checkpoint saves.
        progress: show a progress bar (rank 0).

    Returns:
        An AblationCorpusResult (`.mean_effect` [spec, layer], `.plot()`).

    Raises:
        OptionError, PromptError, TargetError: bad options or corpus, before the model runs.
        DistributedError: under torchrun, a peer process failed.
    """
    adapter = adapter_for(model)
    check_prompt_options(adapter, corpus, n_prompts=n_prompts, max_tokens_per_prompt=max_tokens_per_prompt,
                         text_key=text_key)
    specs = _check_specs(specs)
    target, layers = _check_target_layers(adapter, target, layers)
    site, metric = target.site, _check_scalars(metric, include_bos, batch_size, seed)
    ref_digest = _reference_digest(adapter, reference, specs, max_tokens_per_prompt)
    path = check_run_options(checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress)
    options = {"n_prompts": n_prompts, "max_tokens_per_prompt": max_tokens_per_prompt, "text_key": text_key,
               "reference": ref_digest, "include_bos": include_bos, "batch_size": batch_size, "seed": seed}
    where = site.value if target.features == slice(None) else str(target)  # old checkpoints: the site name
    config = {"job": "ablation_corpus", "specs": list(specs), "site": where, "layers": layers, "metric": metric, **options}
    sweep_options = {"target": target, "layers": layers, "metric": metric, "batch_size": batch_size, "seed": seed}
    step = _statistic(adapter, model, specs=specs, sweep_options=sweep_options, reference=reference,
                      include_bos=include_bos, n_bins=max_tokens_per_prompt)
    prompts = corpus_prompts(adapter, corpus, n_prompts=n_prompts, max_tokens_per_prompt=max_tokens_per_prompt,
                             text_key=text_key)
    with joined(adapter.device) as world:
        loop = Loop(world=world, config=config, checkpoint=path, checkpoint_every=checkpoint_every,
                    progress=progress, desc="ablation_corpus")
        totals, info = run_items(prompts, step, loop=loop, digest_of=prompt_digest, size_of=prompt_size)
    return AblationCorpusResult(sum_by_distance=totals["effect"], count_by_distance=totals["n"],
                                clean_sum=float(totals["clean"]), specs=specs, layers=layers, site=site.value,
                                metric=metric, options=options, run=info)


__all__ = ["SPECS", "AblationCorpusResult", "ablation_corpus"]
