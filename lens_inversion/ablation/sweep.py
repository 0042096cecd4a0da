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
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import LensInversionError, OptionError, PromptError
from ..hooks import ablation_hooks as ah
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.execution import PrefixState, readout_only, run_after_layered, supports_layered
from ..hooks.fast_paths import widening_verified
from ..hooks.preserve import preserves_model
from ..hooks.sites import Site
from ..hooks.targets import index_positions
from ..validation import check_bool, check_choice, check_int, check_seed, read_prompt
from .apply import resample_values
from .result import AblationResult

METRICS = ("kl", "logit_diff", "loss", "prob")
ABLATIONS = ("zero", "mean", "resample", "truncate")
Metric = Callable[[Tensor, Tensor], Tensor]


def _clean_run(adapter: ModelAdapter, tokens: Tensor, site: Site, layers: list[int]) -> tuple[Tensor, dict]:
    keys = [(site, None if site is Site.EMBED else lay) for lay in layers]
    capture = adapter.run(tokens, capture=keys, need_logits=True)
    return capture.logits, {lay: capture[key] for lay, key in zip(layers, keys, strict=True)}


def _reference_acts(adapter: ModelAdapter, reference, site: Site, layers: list[int]) -> tuple[dict, Tensor]:
    if isinstance(reference, Tensor) and reference.is_floating_point():
        raise OptionError("In a sweep, reference= must be prompt(s) (text or token ids), not activations.")
    batch = read_prompt(adapter, reference)
    _, acts = _clean_run(adapter, batch.tokens, site, layers)
    return acts, batch.lengths


class _Scorer:
    """The metric, computed from ablated logits against the clean run."""

    def __init__(self, adapter, metric, tokens, clean, readout, answer, foil) -> None:
        self.metric = metric
        self.tokens = tokens
        self.readout = readout
        self.narrow = isinstance(metric, str) and metric != "loss"
        top = clean[0, readout].topk(2).indices
        self.answer = top[0].item() if answer is None else adapter.token_id(answer)
        self.foil = top[1].item() if foil is None else adapter.token_id(foil)
        self.clean_logits = clean
        self.clean = float(self(clean if not self.narrow else clean[:, readout : readout + 1])[0])

    def __call__(self, logits: Tensor) -> Tensor:
        metric = self.metric
        if callable(metric):
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
        if metric == "loss":
            logp = logits[:, :-1].float().log_softmax(-1)
            nll = -logp.gather(-1, self.tokens[:, 1:, None].expand(logits.shape[0], -1, 1))[..., 0]
            return nll.mean(-1)
        last = (logits[:, 0] if logits.shape[1] == 1 else logits[:, self.readout]).float()
        if metric == "kl":
            clean = self.clean_logits[:, self.readout].float().log_softmax(-1)
            return (clean.exp() * (clean - last.log_softmax(-1))).sum(-1)
        if metric == "prob":
            return last.softmax(-1)[:, self.answer]
        return last[:, self.answer] - last[:, self.foil]


def _row_writer(kind, cells, feature_index, values, d_model):
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


def _plan_groups(adapter, tokens, columns, kind, site, batch_size):
    """Cells per forward, and the clean prefixes (keys/values) each group can start after.

    With a Hugging Face key/value cache, positions are grouped in sorted order into about
    eight groups per layer; a group whose first position is a > 0 reuses the clean
    prefix [0, a) and runs only positions a.. . Otherwise groups are plain chunks.
    """
    order = list(range(len(columns)))
    if kind == "positions" and site is not Site.EMBED and len(columns) > 1:
        order.sort(key=lambda j: columns[j])
        size = max(1, min(batch_size, -(-len(columns) // 8)))
        groups = [order[i : i + size] for i in range(0, len(order), size)]
        starts = sorted({min(columns[j] for j in g) for g in groups} - {0})
        longest = PrefixState.build(adapter, tokens[:, : starts[-1]]) if starts else None
        prefixes = {a: longest.truncated(a) for a in starts}  # one clean run, cut per group
        if prefixes and all(supports_layered(p) for p in prefixes.values()):
            return groups, prefixes
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)], {}


def _as_list(name: str, value):
    """None, one index, or a list/tuple/range of them, as None or a list (items checked later)."""
    if value is None or isinstance(value, (list, tuple, range)):
        return None if value is None else list(value)
    if isinstance(value, torch.Tensor) and value.ndim == 1:
        return list(value)
    if isinstance(value, (int, slice)) or hasattr(value, "__index__"):
        return [value]
    raise OptionError(f"{name} must be None, an int or a list of ints; got {type(value).__name__} {value!r}.")


_USED_BY = {"widths": ("truncate",), "reference": ("mean", "resample")}


def _check_unused(ablation: str, **options) -> None:
    """An option the chosen ablation ignores is an error, not silently dropped."""
    for name, value in options.items():
        if value is not None and ablation not in _USED_BY[name]:
            users = " or ".join(repr(a) for a in _USED_BY[name])
            raise OptionError(f"{name}= applies only to ablation={users}; got {name}={value!r} with ablation={ablation!r}.")


def _check_widths(adapter, widths) -> list[int]:
    """The kept widths of a truncate sweep (default: 8 steps up to d_model), checked before any run."""
    if widths is None:
        return [round(adapter.d_model * k / 8) for k in range(1, 9)]
    raw = list(widths) if isinstance(widths, (list, tuple, range)) else None
    if not raw or any(isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= adapter.d_model for w in raw):
        raise OptionError(f"widths must be a non-empty list of integers in [0, {adapter.d_model}]; got {widths!r}.")
    return raw


@preserves_model
def ablation_sweep(
    model,
    prompt,
    /,
    *,
    ablation: str = "zero",
    site: "Site | str" = "resid_post",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    features: slice = slice(None),
    widths: Sequence[int] | None = None,
    metric: "str | Metric" = "kl",
    readout: int = -1,
    answer: "str | int | None" = None,
    foil: "str | int | None" = None,
    reference=None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AblationResult:
    """Ablate each (layer, position) of `site` in turn and measure the output.

    Args:
        model: a TransformerBridge or HookedTransformer.
        prompt: one prompt (string or [pos] / [1, pos] token ids).
        ablation: "zero", "mean" (mean over `reference`, or over the prompt's own
            positions when no reference is given), "resample" (the activation of a
            `reference` prompt at the same position, row drawn with `seed`) or
            "truncate" (zero features from each of `widths` on, at `positions`).
        site: resid_pre, resid_mid, resid_post, attn_out, mlp_out or embed.
        layers: rows of the sweep (default: every layer).
        positions: columns of the sweep (default: every position).
        features: the feature slice ablated at each cell (zero / mean / resample).
        widths: kept widths for "truncate" (default: 8 steps up to d_model).
        metric: "kl" (clean ‖ ablated, at `readout`), "prob" / "logit_diff" (of `answer`,
            minus `foil`; default the clean top-1 and top-2 at `readout`), "loss" (mean
            next-token loss over the prompt) or a callable
            `f(ablated_logits [B, pos, vocab], clean_logits [1, pos, vocab]) -> [B]`.
        readout: the position whose next-token prediction readout metrics compare.
        answer: answer token for "prob" / "logit_diff" (string or id).
        foil: foil token for "logit_diff".
        reference: prompt(s) for "mean" and "resample".
        batch_size: rows per forward pass (default: 4096 // prompt length, at most 64).
        seed: seed of the row draw for "resample".
        progress: show a progress bar.

    Returns:
        AblationResult with values [layers, positions] (or [layers, widths]).
    """
    adapter = adapter_for(model)
    check_choice("ablation", ablation, ABLATIONS)
    if not callable(metric):
        check_choice("metric", metric, METRICS)
    site = Site.parse(site)
    if site not in (Site.EMBED, Site.RESID_PRE, Site.RESID_MID, Site.RESID_POST, Site.ATTN_OUT, Site.MLP_OUT):
        raise OptionError(
            f"site={site.value!r} cannot be ablated; "
            "choose resid_pre, resid_mid, resid_post, attn_out, mlp_out or embed."
        )
    check_seed(seed, allow_none=False)
    check_bool("progress", progress)
    check_int("batch_size", batch_size, low=1, allow_none=True)
    layers, positions = _as_list("layers", layers), _as_list("positions", positions)
    _check_unused(ablation, widths=widths, reference=reference)
    widths = _check_widths(adapter, widths) if ablation == "truncate" else widths
    batch = read_prompt(adapter, prompt)
    if batch.batch != 1:
        raise PromptError(f"ablation_sweep takes one prompt; got {batch.batch}. Sweep each prompt separately.")
    tokens, n_pos = batch.tokens, batch.pos
    # Bounded memory by default: about 4096 row-tokens per forward, at most 64 rows.
    batch_size = batch_size or max(1, min(64, 4096 // n_pos))
    if site is Site.EMBED:
        layers = [0]
    else:
        layers = [adapter.check_layer(lay) for lay in (range(adapter.n_layers) if layers is None else layers)]
    positions = (
        list(range(n_pos)) if positions is None else [index_positions(p, n_pos, "position")[0] for p in positions]
    )
    if not layers or not positions:
        raise OptionError("layers and positions must not be empty.")
    readout = index_positions(readout, n_pos, "readout")[0]
    feature_index = torch.tensor(index_positions(features, adapter.d_model, "feature"), device=adapter.device)

    with torch.no_grad():
        clean, clean_acts = _clean_run(adapter, tokens, site, layers)
        scorer = _Scorer(adapter, metric, tokens, clean, readout, answer, foil)
        if ablation == "mean":
            if reference is None:
                means = {lay: clean_acts[lay][0].mean(0) for lay in layers}
            else:
                ref, lengths = _reference_acts(adapter, reference, site, layers)
                mask = (torch.arange(ref[layers[0]].shape[1])[None] < lengths[:, None]).to(adapter.device)
                means = {lay: (ref[lay] * mask[..., None]).sum((0, 1)) / mask.sum() for lay in layers}
        elif ablation == "resample":
            if reference is None:
                raise OptionError("ablation='resample' needs reference= (prompt(s) to draw activations from).")
            ref, lengths = _reference_acts(adapter, reference, site, layers)
        if ablation == "truncate":
            kind = "widths"
            columns = sorted(set(widths))
        else:
            kind, columns = "positions", positions

        def cell_values(layer, chunk):
            if kind == "widths":
                return [(w, positions) for w in chunk], None
            if ablation == "zero":
                return chunk, 0.0
            if ablation == "mean":
                return chunk, means[layer][feature_index]
            draws = [resample_values(ref[layer], lengths, [p], 1, seed)[0, 0] for p in chunk]
            return chunk, torch.stack(draws)[:, feature_index]

        groups, prefixes = _plan_groups(adapter, tokens, columns, kind, site, batch_size)
        values = torch.empty(len(layers), len(columns))
        with tqdm(total=len(layers) * len(groups), disable=not progress, desc="ablation sweep") as bar:
            for row, layer in enumerate(layers):
                for group in groups:
                    chunk = [columns[j] for j in group]
                    start = min(chunk) if prefixes else 0
                    index = torch.tensor(group)
                    bar.update()
                    if scorer.narrow and readout < start:  # every cell lies after the readout: no effect
                        values[row, index] = scorer.clean
                        continue
                    cells, cell = cell_values(layer, chunk)
                    if kind == "positions":
                        cells = [p - start for p in cells]
                    rewrite = _row_writer(kind, cells, feature_index, cell, adapter.d_model)
                    plan = ah.write_site(adapter, site, None if site is Site.EMBED else layer, rewrite)
                    pairs = plan.pairs() + (readout_only(adapter, [readout - start]) if scorer.narrow else [])
                    if start:
                        logits = run_after_layered(
                            prefixes[start],
                            tokens[:, start:],
                            rows=len(chunk),
                            # rows multiply where the site is: before block l's attention, or after it
                            from_layer=layer if site is Site.RESID_PRE else layer + 1,
                            hooks=pairs,
                        )
                        if logits.shape[1] != 1:  # full positions: put the unchanged prefix back in front
                            logits = torch.cat([clean[:, :start].expand(len(chunk), -1, -1), logits], dim=1)
                    else:
                        # Every row from the start where the batch cannot widen mid-forward: the
                        # embedding comes before the attention mask is built; ALiBi biases and
                        # some masks are sized by the input's batch (checked once per model).
                        widen = site is Site.EMBED or not widening_verified(adapter)
                        run_tokens = tokens.expand(len(chunk), -1) if widen else tokens
                        logits = adapter.run(run_tokens, hooks=pairs, need_logits=True).logits
                    values[row, index] = scorer(logits).cpu()
    return AblationResult(
        values=values,
        layers=layers,
        columns=columns,
        kind=kind,
        metric=metric if isinstance(metric, str) else getattr(metric, "__name__", "custom"),
        ablation=ablation,
        site=site.value,
        clean=scorer.clean,
        str_tokens=batch.str_tokens[0],
        readout=readout if scorer.narrow else None,
    )
