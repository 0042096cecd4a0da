"""Batched ablation sweeps over layers × positions (or layers × kept widths).

How the work is saved: ablating (layer lay, position p) changes nothing below layer lay. The
sweep runs the prompt once (batch 1) up to the ablated site and, in the hook there,
expands that one clean activation into a batch of rows, one per cell of the chunk, each
with its own ablation. Only the blocks from lay upwards run on the whole batch. For
readout metrics the final norm's output is cut to the readout token, so the
unembedding runs on one position instead of all. On Hugging Face-booted bridges, nothing
before position p changes either: positions are grouped, and a group starting at a > 0
reuses the clean prefix's keys/values (`hooks.execution.PrefixState`) and runs only
positions a.. (one row below layer l, one row per cell from layer l up).

The code is a plan (`SweepPlan`: every option checked and resolved before the model runs)
and a group runner (`_run_group`: one forward for one layer and one group of columns).
"""

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import metrics as M
from ..deprecation import translate_values, warn_renamed
from ..errors import LensInversionError, OptionError, PromptError, TargetError
from ..hooks import ablation_hooks as ah
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.execution import PrefixState, readout_only, run_after_layered, supports_layered
from ..hooks.fast_paths import widening_verified
from ..hooks.preserve import preserves_model
from ..hooks.sites import Site
from ..hooks.targets import Target, _check_index, index_positions
from ..validation import check_bool, check_choice, check_int, check_int_list, check_seed, check_used_by, read_prompt
from .apply import resample_values
from .result import AblationResult

METRICS = ("kl", "logit_diff", "cross_entropy", "prob")
MetricName = Literal["kl", "logit_diff", "cross_entropy", "prob"]
ABLATIONS = ("zero", "mean", "resample", "truncate")
AblationName = Literal["zero", "mean", "resample", "truncate"]
SITES = (Site.EMBED, Site.RESID_PRE, Site.RESID_MID, Site.RESID_POST, Site.ATTN_OUT, Site.MLP_OUT)
Metric = Callable[[Tensor, Tensor], Tensor]
# Default batch: about this many token rows (rows × prompt length) per forward, so the
# activations of one forward stay bounded whatever the prompt length ...
ROW_TOKENS_PER_FORWARD = 4096
# ... and at most this many rows: for short prompts 4096 // length would be hundreds of
# rows, each a full [pos, d_model] activation per layer, with no gain once the device is busy.
MAX_ROWS_PER_FORWARD = 64
# Positions of one layer are split into about this many groups when prefixes are reused:
# more groups skip more of each group's prefix but mean more (smaller) forwards.
PREFIX_GROUPS = 8
# Default kept widths of a truncate sweep: d_model/8, 2·d_model/8, ..., d_model.
WIDTH_STEPS = 8
_USED_BY = {"widths": ("truncate",), "reference": ("mean", "resample")}
_LEGACY = {"site": "target", "positions": "target", "features": "target"}


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    """A checked sweep: what is ablated where, and how the work is batched."""

    adapter: ModelAdapter
    tokens: Tensor  # [1, pos]
    str_tokens: list[str]
    ablation: str
    site: Site
    layers: list[int]  # the rows
    kind: Literal["positions", "widths"]
    columns: list[int]  # ablated positions, or kept widths
    positions: list[int]  # truncate: the positions every width applies to
    features: Tensor  # feature indices ablated at a cell (zero / mean / resample)
    metric: "str | Metric"
    readout: int
    answer: int | None  # token ids (None: the clean run's top two at the readout)
    foil: int | None
    reference: object
    batch_size: int
    seed: int
    progress: bool

    def layer_key(self, layer: int) -> int | None:
        """The hook layer of a row (None for the embedding)."""
        return None if self.site is Site.EMBED else layer


def _as_list(name: str, value):
    """None, one index, or a list/tuple/range of them, as None or a list (items checked later)."""
    if value is None or isinstance(value, (list, tuple, range)):
        return None if value is None else list(value)
    if isinstance(value, torch.Tensor) and value.ndim == 1:
        return list(value)
    if isinstance(value, (int, slice)) or hasattr(value, "__index__"):
        return [value]
    raise OptionError(f"{name} must be None, an int or a list of ints; got {type(value).__name__} {value!r}.")


def _sweep_target(target) -> Target:
    """The swept activation: None is every resid_post cell; a string may leave the layer out."""
    if target is None:
        return Target.layerless(Site.RESID_POST)
    target = Target.parse(target, layer_optional=True)
    if target.site not in SITES:
        raise OptionError(
            f"site={target.site.value!r} cannot be ablated; "
            "choose resid_pre, resid_mid, resid_post, attn_out, mlp_out or embed."
        )
    if target.batch not in (slice(None), 0, slice(0, 1), slice(None, 1)):
        raise TargetError(f"ablation_sweep sweeps one prompt; target {target} selects batch {target.batch!r}.")
    return target


def _rows(adapter: ModelAdapter, target: Target, layers) -> list[int]:
    """The layers swept: the target's own layer, else `layers` (default every layer)."""
    layers = _as_list("layers", layers)
    if target.site is Site.EMBED:
        return [0]
    if target.layer is not None:
        if layers is not None:
            raise OptionError(f"target {target} names layer {target.layer}; give the layer there or in layers=, not both.")
        layers = [target.layer]
    return [adapter.check_layer(lay) for lay in (range(adapter.n_layers) if layers is None else layers)]


def _check_options(ablation, metric, seed, progress, batch_size, widths, reference) -> None:
    check_choice("ablation", ablation, ABLATIONS)
    if not callable(metric):
        check_choice("metric", metric, METRICS)
    check_seed(seed, allow_none=False)
    check_bool("progress", progress)
    check_int("batch_size", batch_size, low=1, allow_none=True)
    check_used_by("ablation", ablation, _USED_BY, widths=widths, reference=reference)
    if ablation == "resample" and reference is None:
        raise OptionError("ablation='resample' needs reference= (prompt(s) to draw activations from).")


def _columns(adapter, target: Target, positions, ablation: str, widths, n_pos: int):
    """(kind, columns, positions): the sweep's columns and the positions ablated."""
    if positions is None:
        positions = target.token_positions(n_pos)
    else:  # the deprecated positions= list
        positions = [index_positions(p, n_pos, "position")[0] for p in positions]
    if ablation != "truncate":
        return "positions", positions, positions
    if target.features != slice(None):
        raise OptionError(f"ablation='truncate' sets the kept width itself; give {target} without a feature slice.")
    if widths is None:
        widths = [round(adapter.d_model * k / WIDTH_STEPS) for k in range(1, WIDTH_STEPS + 1)]
    widths = check_int_list("widths", widths, low=0, high=adapter.d_model)
    return "widths", sorted(set(widths)), positions


def _token_or_none(adapter: ModelAdapter, token: "str | int | None") -> int | None:
    """A token option as its id, checked before anything runs (PromptError for a non-token)."""
    return None if token is None else adapter.token_id(token)


def plan_sweep(model, prompt, *, ablation, target, layers, positions=None, widths, metric, readout, answer, foil,
               reference, batch_size, seed, progress) -> SweepPlan:
    """Check every option and resolve the rows, columns and feature slice (nothing runs yet)."""
    adapter = adapter_for(model)
    _check_options(ablation, metric, seed, progress, batch_size, widths, reference)
    target = _sweep_target(target)
    rows = _rows(adapter, target, layers)
    batch = read_prompt(adapter, prompt)
    if batch.batch != 1:
        raise PromptError(f"ablation_sweep takes one prompt; got {batch.batch}. Sweep each prompt separately.")
    n_pos = batch.pos
    kind, columns, cells = _columns(adapter, target, positions, ablation, widths, n_pos)
    if not rows or not columns:
        raise OptionError("layers and positions must not be empty.")
    features = index_positions(target.features, adapter.d_model, "feature")
    return SweepPlan(
        adapter=adapter, tokens=batch.tokens, str_tokens=batch.str_tokens[0], ablation=ablation, site=target.site,
        layers=rows, kind=kind, columns=columns, positions=cells,
        features=torch.tensor(features, device=adapter.device), metric=metric,
        readout=index_positions(readout, n_pos, "readout")[0], answer=_token_or_none(adapter, answer),
        foil=_token_or_none(adapter, foil), reference=reference,
        batch_size=batch_size or max(1, min(MAX_ROWS_PER_FORWARD, ROW_TOKENS_PER_FORWARD // n_pos)),
        seed=seed, progress=progress,
    )


def _clean_run(adapter: ModelAdapter, tokens: Tensor, site: Site, layers: list[int]) -> tuple[Tensor, dict]:
    keys = [(site, None if site is Site.EMBED else lay) for lay in layers]
    capture = adapter.run(tokens, capture=keys, need_logits=True)
    return capture.require_logits(), {lay: capture[key] for lay, key in zip(layers, keys, strict=True)}


def _reference_acts(adapter: ModelAdapter, reference, site: Site, layers: list[int]) -> tuple[dict, Tensor]:
    if isinstance(reference, Tensor) and reference.is_floating_point():
        raise OptionError("In a sweep, reference= must be prompt(s) (text or token ids), not activations.")
    batch = read_prompt(adapter, reference)
    _, acts = _clean_run(adapter, batch.tokens, site, layers)
    return acts, batch.lengths


class _Scorer:
    """The metric, computed from ablated logits against the clean run (`lens_inversion.metrics`)."""

    def __init__(self, plan: SweepPlan, clean: Tensor) -> None:
        self.metric, self.tokens, self.readout = plan.metric, plan.tokens, plan.readout
        self.narrow = isinstance(self.metric, str) and self.metric != "cross_entropy"
        top = clean[0, self.readout].topk(2).indices
        self.answer = top[0].item() if plan.answer is None else plan.answer
        self.foil = top[1].item() if plan.foil is None else plan.foil
        self.clean_logits = clean
        self.clean = float(self(clean if not self.narrow else clean[:, self.readout : self.readout + 1])[0])

    def _custom(self, logits: Tensor) -> Tensor:
        metric = self.metric
        assert callable(metric)  # narrowing: only a callable metric is computed here
        try:
            values = torch.as_tensor(metric(logits, self.clean_logits))
        except LensInversionError:
            raise
        except Exception as error:
            raise OptionError(
                f"The metric callable raised {type(error).__name__}: {error}; it must return one value per "
                f"row, shape ({logits.shape[0]},), from (ablated_logits, clean_logits)."
            ) from error
        if values.shape != (logits.shape[0],):
            raise OptionError(
                f"A metric callable must return one value per row, shape ({logits.shape[0]},); "
                f"got {tuple(values.shape)}."
            )
        return values.float()

    def __call__(self, logits: Tensor) -> Tensor:
        if callable(self.metric):
            return self._custom(logits)
        rows = logits.shape[0]
        if self.metric == "cross_entropy":
            return M.cross_entropy(logits[:, :-1], self.tokens[:, 1:].expand(rows, -1)).mean(-1)
        last = (logits[:, 0] if logits.shape[1] == 1 else logits[:, self.readout]).float()
        if self.metric == "kl":
            return M.kl_divergence(self.clean_logits[:, self.readout], last)
        answer = torch.full((rows,), self.answer, device=last.device)
        if self.metric == "prob":
            return M.probability(last, answer)
        return M.token_logit(last, answer) - M.token_logit(last, torch.full_like(answer, self.foil))


class _CellValues:
    """What each cell of a group is replaced with: zero, a mean, resampled rows, or a width."""

    def __init__(self, plan: SweepPlan, clean_acts: dict) -> None:
        self.plan = plan
        self.means: dict[int, Tensor] | None = None
        self.ref: dict[int, Tensor] | None = None
        self.lengths: Tensor | None = None
        if plan.ablation == "mean" and plan.reference is None:
            self.means = {lay: clean_acts[lay][0].mean(0) for lay in plan.layers}
        elif plan.ablation in ("mean", "resample"):
            self.ref, self.lengths = _reference_acts(plan.adapter, plan.reference, plan.site, plan.layers)
            if plan.ablation == "mean":
                mask = (torch.arange(self.ref[plan.layers[0]].shape[1])[None] < self.lengths[:, None])
                mask = mask.to(plan.adapter.device)[..., None]
                self.means = {lay: (self.ref[lay] * mask).sum((0, 1)) / mask.sum() for lay in plan.layers}

    def __call__(self, layer: int, chunk: list[int]):
        plan = self.plan
        if plan.kind == "widths":
            return [(w, plan.positions) for w in chunk], None
        if plan.ablation == "zero":
            return chunk, 0.0
        if plan.ablation == "mean":
            assert self.means is not None  # narrowing: set in __init__ for ablation="mean"
            return chunk, self.means[layer][plan.features]
        assert self.ref is not None and self.lengths is not None  # narrowing: set for ablation="resample"
        draws = [resample_values(self.ref[layer], self.lengths, [p], 1, plan.seed)[0, 0] for p in chunk]
        return chunk, torch.stack(draws)[:, plan.features]


def _row_writer(kind, cells, feature_index, values):
    """Hook rewrite that expands a [1, pos, d] activation into one row per cell."""

    def rewrite(x: Tensor) -> Tensor:
        if x.shape[0] not in (1, len(cells)):
            raise PromptError(f"The sweep expects 1 or {len(cells)} rows at the ablated site; got {x.shape[0]}.")
        out = x.expand(len(cells), -1, -1).clone()
        rows = torch.arange(len(cells), device=x.device)
        if kind == "positions":
            pos = torch.tensor(cells, device=x.device)
            out[rows[:, None], pos[:, None], feature_index[None, :]] = (
                values if isinstance(values, float) else values.to(x.dtype)
            )
        else:
            for row, (keep, positions) in enumerate(cells):
                out[row, positions, keep:] = 0.0
        return out

    return rewrite


def _plan_groups(plan: SweepPlan) -> tuple[list[list[int]], dict]:
    """Column indices per forward, and the clean prefixes (keys/values) each group can start after.

    With a Hugging Face key/value cache, positions are grouped in sorted order into about
    PREFIX_GROUPS groups per layer; a group whose first position is a > 0 reuses the clean
    prefix [0, a) and runs only positions a.. . Otherwise groups are plain chunks.
    """
    columns, size = plan.columns, plan.batch_size
    order = list(range(len(columns)))
    if plan.kind == "positions" and plan.site is not Site.EMBED and len(columns) > 1:
        order.sort(key=lambda j: columns[j])
        size = max(1, min(size, -(-len(columns) // PREFIX_GROUPS)))
        groups = [order[i : i + size] for i in range(0, len(order), size)]
        starts = sorted({min(columns[j] for j in g) for g in groups} - {0})
        prefixes: dict[int, PrefixState] = {}
        if starts:
            longest = PrefixState.build(plan.adapter, plan.tokens[:, : starts[-1]])
            prefixes = {a: longest.truncated(a) for a in starts}  # one clean run, cut per group
        if prefixes and all(supports_layered(p) for p in prefixes.values()):
            return groups, prefixes
    return [order[i : i + size] for i in range(0, len(order), size)], {}


def _forward(plan: SweepPlan, layer: int, hooks: list, rows: int, start: int, prefix, clean: Tensor,
             narrow: bool) -> Tensor:
    """Logits of one group: after the clean prefix [0, start) when there is one, else from the start."""
    if start:
        logits = run_after_layered(
            prefix,
            plan.tokens[:, start:],
            rows=rows,
            # rows multiply where the site is: before block l's attention, or after it
            from_layer=layer if plan.site is Site.RESID_PRE else layer + 1,
            hooks=hooks,
        )
        if logits.shape[1] != 1 or not narrow:  # full positions: put the unchanged prefix back in front
            logits = torch.cat([clean[:, :start].expand(rows, -1, -1), logits], dim=1)
        return logits
    # Every row from the start where the batch cannot widen mid-forward: the embedding comes
    # before the attention mask is built; ALiBi biases and some masks are sized by the
    # input's batch (checked once per model).
    widen = plan.site is Site.EMBED or not widening_verified(plan.adapter)
    run_tokens = plan.tokens.expand(rows, -1) if widen else plan.tokens
    return plan.adapter.run(run_tokens, hooks=hooks, need_logits=True).require_logits()


def _run_group(plan: SweepPlan, scorer: _Scorer, fill: _CellValues, layer: int, chunk: list[int],
               prefixes: dict, clean: Tensor) -> Tensor:
    """The metric of each cell of one group of columns at one layer (one forward)."""
    start = min(chunk) if prefixes else 0
    if scorer.narrow and plan.readout < start:  # every cell lies after the readout: no effect
        return torch.full((len(chunk),), scorer.clean)
    cells, cell = fill(layer, chunk)
    if plan.kind == "positions":
        cells = [p - start for p in cells]
    rewrite = _row_writer(plan.kind, cells, plan.features, cell)
    hooks = ah.write_site(plan.adapter, plan.site, plan.layer_key(layer), rewrite).pairs()
    if scorer.narrow:
        hooks += readout_only(plan.adapter, [plan.readout - start])
    logits = _forward(plan, layer, hooks, len(chunk), start, prefixes.get(start), clean, scorer.narrow)
    return scorer(logits).cpu()


def run_sweep(plan: SweepPlan) -> AblationResult:
    """Run a checked plan: one clean run, then one forward per layer and group of columns."""
    with torch.no_grad():
        clean, clean_acts = _clean_run(plan.adapter, plan.tokens, plan.site, plan.layers)
        scorer, fill = _Scorer(plan, clean), _CellValues(plan, clean_acts)
        groups, prefixes = _plan_groups(plan)
        values = torch.empty(len(plan.layers), len(plan.columns))
        with tqdm(total=len(plan.layers) * len(groups), disable=not plan.progress, desc="ablation sweep") as bar:
            for row, layer in enumerate(plan.layers):
                for group in groups:
                    chunk = [plan.columns[j] for j in group]
                    values[row, torch.tensor(group)] = _run_group(plan, scorer, fill, layer, chunk, prefixes, clean)
                    bar.update()
    metric = plan.metric if isinstance(plan.metric, str) else getattr(plan.metric, "__name__", "custom")
    return AblationResult(
        values=values, layers=plan.layers, columns=plan.columns, kind=plan.kind, metric=metric,
        ablation=plan.ablation, site=plan.site.value, clean=scorer.clean, str_tokens=plan.str_tokens,
        readout=plan.readout if scorer.narrow else None,
    )


def _legacy_target(kwargs: dict) -> tuple[dict, list | None]:
    """Translate the deprecated site= / positions= / features= (and metric='loss') to the new options.

    Returns the new keywords and, for a positions= list, the list itself (a Target's token
    index is one int or slice, so an arbitrary list of positions is passed on as it is).
    """
    out = translate_values(kwargs, {"metric": {"loss": "cross_entropy"}})
    given = [name for name in _LEGACY if name in out]
    if not given:
        return out, None
    if "target" in out:
        raise OptionError(f"ablation_sweep() got target= and the old {', '.join(g + '=' for g in given)}; give only target=.")
    for name in given:
        warn_renamed(name, "target", note="a Target or its string form, e.g. 'resid_post[:, 1:, :64]'")
    features = out.pop("features", slice(None))
    _check_index(features, "feature")
    positions = _as_list("positions", out.pop("positions", None))
    single = positions is not None and len(positions) == 1 and isinstance(positions[0], slice)
    tokens = positions[0] if single else slice(None)
    out["target"] = Target.layerless(out.pop("site", Site.RESID_POST), tokens=tokens, features=features)
    return out, None if single else positions


def _accepts_legacy_options(function: Callable) -> Callable:
    """Keep site= / positions= / features= and metric='loss' working for one release, with a warning."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        kwargs, positions = _legacy_target(kwargs)
        if positions is not None:
            return _position_list_sweep(*args, positions=positions, **kwargs)
        return function(*args, **kwargs)

    wrapper.__renamed_options__ = dict(_LEGACY)  # type: ignore[attr-defined]  # a function attribute (docs/glossary.py reads it)
    return wrapper


@preserves_model
def _position_list_sweep(model, prompt, /, *, positions: list, **options) -> AblationResult:
    """The deprecated positions=[...] form: the same sweep over an explicit list of columns."""
    defaults = {"ablation": "zero", "target": None, "layers": None, "widths": None, "metric": "kl", "readout": -1,
                "answer": None, "foil": None, "reference": None, "batch_size": None, "seed": 0, "progress": True}
    unknown = set(options) - set(defaults)
    if unknown:
        raise OptionError(f"ablation_sweep() got unknown options {sorted(unknown)}.")
    return run_sweep(plan_sweep(model, prompt, positions=positions, **{**defaults, **options}))


@_accepts_legacy_options
@preserves_model
def ablation_sweep(
    model,
    prompt,
    /,
    *,
    ablation: AblationName = "zero",
    target: "Target | str | None" = None,
    layers: int | Sequence[int] | None = None,
    widths: Sequence[int] | None = None,
    metric: "MetricName | Metric" = "kl",
    readout: int = -1,
    answer: "str | int | None" = None,
    foil: "str | int | None" = None,
    reference=None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AblationResult:
    """Ablate each (layer, position) of an activation in turn and measure the output.

    Args:
        model: a TransformerBridge or HookedTransformer.
        prompt: one prompt (string or [pos] / [1, pos] token ids).
        ablation: "zero", "mean" (mean over `reference`, or over the prompt's own positions
            when no reference is given), "resample" (the activation of a `reference` prompt
            at the same position, row drawn with `seed`) or "truncate" (zero features from
            each of `widths` on, at the target's positions).
        target: the activation swept, a `Target` or its string form: its site (resid_pre,
            resid_mid, resid_post, attn_out, mlp_out or embed), its token slice (the
            columns; default every position) and its feature slice (the features ablated
            at each cell). The layer may be left out ("resid_post[:, 1:, :64]"): the rows
            are then `layers`. None: "resid_post", every position and feature.
        layers: rows of the sweep when the target names no layer: a block index or a list of
            them (default: every layer).
        widths: kept widths for "truncate" (default: 8 steps up to d_model).
        metric: "kl" (clean ‖ ablated, at `readout`), "prob" / "logit_diff" (of `answer`,
            minus `foil`; default the clean top-1 and top-2 at `readout`), "cross_entropy"
            (mean next-token loss over the prompt) or a callable
            `f(ablated_logits [B, pos, vocab], clean_logits [1, pos, vocab]) -> [B]`.
        readout: the position whose next-token prediction readout metrics compare.
        answer: the token for "prob" / "logit_diff" (string or id).
        foil: the token subtracted in "logit_diff" (string or id).
        reference: prompt(s) for "mean" and "resample".
        batch_size: rows per forward pass (default: 4096 // prompt length, at most 64).
        seed: seed of the row draw for "resample".
        progress: show a progress bar.

    Returns:
        AblationResult with values [layers, positions] (or [layers, widths]).

    Deprecated: `site=`, `positions=`, `features=` (use `target=`) and metric="loss" (use "cross_entropy").
    """
    plan = plan_sweep(model, prompt, ablation=ablation, target=target, layers=layers, widths=widths, metric=metric,
                      readout=readout, answer=answer, foil=foil, reference=reference, batch_size=batch_size,
                      seed=seed, progress=progress)
    return run_sweep(plan)
