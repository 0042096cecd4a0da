"""Turn ablation specs into hook plans: resolve layers, targets and reference activations."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import LensInversionError, OptionError, PromptError, UnsupportedModelError
from ..hooks import ablation_hooks as ah
from ..hooks.adapter import ModelAdapter
from ..hooks.preserve import preserved
from ..hooks.sites import Site
from ..hooks.targets import Target, index_positions
from ..validation import read_prompt
from .specs import (
    SPEC_TYPES,
    Ablate,
    BypassLayerNorm,
    FreezeLayerNorm,
    RemoveResidual,
    Spec,
    TruncateWidth,
    ZeroComponent,
)

Values = Callable[[Tensor, Tensor, Tensor, Tensor], "Tensor | float"]


def norms_of(adapter: ModelAdapter, layer: int | None, which: str) -> list[ah.NormSlot]:
    """The norms that `layer` / `which` name on this model: those of the named kinds it has.

    `which="all"` is every block norm the model has (pre- and post-sub-layer norms alike)
    and, with `layer=None`, the final norm; a kind such as "ln1" with `layer=None` is that
    norm in every block that has one. Refused only when nothing of the kind exists.
    """
    layers = range(adapter.n_layers) if layer is None else [adapter.check_layer(layer)]
    kinds = ah.BLOCK_NORM_KINDS if which == "all" else (() if which == "final" else (which,))
    chosen = [slot for lay in layers for slot in ah.block_norms(adapter, lay, kinds)]
    if which == "final" or (which == "all" and layer is None):
        final = ah.final_norm(adapter)
        if final is not None:
            chosen.append(final)
    if not chosen:
        wanted = "ln_final" if which == "final" else "norm" if which == "all" else which
        where = "" if layer is None or which == "final" else f" in block {layers[0]}"
        raise UnsupportedModelError(f"This model has no {wanted}{where} to bypass or freeze; its norms: {ah.norm_inventory(adapter)}.")
    return chosen


def _rows_and_lengths(adapter: ModelAdapter, target: Target, reference) -> tuple[Tensor, Tensor]:
    """Reference activations [rows, pos, d] at the target's site, with each row's real length."""
    if isinstance(reference, Tensor) and reference.is_floating_point():
        acts = reference.detach()
        if acts.ndim == 1:
            acts = acts[None, None]
        elif acts.ndim == 2:
            acts = acts[None]
        if acts.shape[-1] != adapter.d_model:
            raise OptionError(
                f"A reference tensor must end in d_model={adapter.d_model} features; "
                f"got shape {tuple(reference.shape)}."
            )
        acts = acts.reshape(-1, *acts.shape[-2:]) if acts.ndim > 3 else acts
        return acts.to(adapter.device), torch.full((acts.shape[0],), acts.shape[1])
    batch = read_prompt(adapter, reference)
    with preserved(adapter.model), torch.no_grad():
        capture = adapter.run(batch.tokens, capture=[target.key])
    return capture[target.key].detach(), batch.lengths


def reference_mean(adapter: ModelAdapter, target: Target, reference) -> Tensor:
    """Mean activation [d_model] of `reference` over rows and real positions."""
    acts, lengths = _rows_and_lengths(adapter, target, reference)
    mask = (torch.arange(acts.shape[1])[None] < lengths[:, None]).to(acts.device, acts.dtype)
    return (acts * mask[..., None]).sum((0, 1)) / mask.sum()


def reference_rows(adapter: ModelAdapter, target: Target, reference) -> tuple[Tensor, Tensor]:
    """Reference activations [rows, pos, d_model] and lengths for resampling."""
    return _rows_and_lengths(adapter, target, reference)


def resample_values(acts: Tensor, lengths: Tensor, positions: list[int], n_rows: int, seed: int) -> Tensor:
    """For each of `n_rows` rows, a reference row drawn with `seed`: values [rows, positions, d]."""
    need = max(positions) + 1
    usable = torch.nonzero(lengths >= need).flatten()
    if usable.numel() == 0:
        raise PromptError(
            f"Resampling position {need - 1} needs a reference of at least {need} tokens; "
            f"the longest has {int(lengths.max())}."
        )
    generator = torch.Generator().manual_seed(seed)
    rows = usable[torch.randint(usable.numel(), (n_rows,), generator=generator)].to(acts.device)
    return acts[rows][:, positions]


def replace_values(x: Tensor, batch: list[int], positions: list[int], features: list[int], values) -> Tensor:
    """Copy of x [B, P, d] with x[batch, positions, features] set to `values` (broadcast)."""
    device = x.device
    bi = torch.tensor(batch, device=device)[:, None, None]
    pi = torch.tensor(positions, device=device)[None, :, None]
    fi = torch.tensor(features, device=device)[None, None, :]
    out = x.clone()
    out[bi, pi, fi] = values if isinstance(values, (int, float)) else values.to(x.dtype)
    return out


def _ablate_plan(adapter: ModelAdapter, spec: Ablate) -> ah.HookPlan:
    assert isinstance(spec.target, Target)  # narrowing: Ablate.__post_init__ parsed it
    target = spec.target.resolve(adapter)
    features = target.feature_indices(adapter.d_model)
    fi = torch.tensor(features, device=adapter.device)
    if spec.mode == "mean":
        mean = reference_mean(adapter, target, spec.reference)[fi]
    elif spec.mode == "resample":
        acts, lengths = reference_rows(adapter, target, spec.reference)

    def rewrite(x: Tensor) -> Tensor:
        batch = index_positions(target.batch, x.shape[0], f"In {spec!r}: batch")
        positions = target.token_positions(x.shape[1])
        values: float | Tensor
        if spec.mode == "zero":
            values = 0.0
        elif spec.mode == "mean":
            values = mean
        else:
            values = resample_values(acts, lengths, positions, len(batch), spec.seed)[..., fi]
        return replace_values(x, batch, positions, features, values)

    return ah.write_site(adapter, target.site, target.layer, rewrite)


def _truncate_plan(adapter: ModelAdapter, spec: TruncateWidth) -> ah.HookPlan:
    value = spec.target_or_site
    if isinstance(value, Site):
        layers = [None] if value is Site.EMBED else list(range(adapter.n_layers))
        targets = [Target(site=value, layer=lay) for lay in layers]
    else:
        assert isinstance(value, Target)  # narrowing: TruncateWidth.__post_init__ parsed a string
        targets = [value.resolve(adapter)]
    dropped = list(range(min(spec.keep, adapter.d_model), adapter.d_model))
    plan = ah.HookPlan()
    for target in targets:

        def rewrite(x: Tensor, target=target) -> Tensor:
            if not dropped:
                return x
            positions = target.token_positions(x.shape[1])
            return replace_values(x, list(range(x.shape[0])), positions, dropped, 0.0)

        plan = plan + ah.write_site(adapter, target.site, target.layer, rewrite)
    return plan


def spec_plan(adapter: ModelAdapter, spec: Spec) -> ah.HookPlan:
    """The hooks that realise one spec on this model."""
    if isinstance(spec, RemoveResidual):
        return ah.remove_residual(adapter, adapter.check_layer(spec.layer), spec.around)
    if isinstance(spec, ZeroComponent):
        return ah.zero_component(adapter, adapter.check_layer(spec.layer), spec.component)
    if isinstance(spec, BypassLayerNorm):
        build = ah.bypass_norm if spec.mode == "identity" else ah.unit_scale_norm
        plan = ah.HookPlan()
        for slot in norms_of(adapter, spec.layer, spec.which):
            plan = plan + build(adapter, slot)
        return plan
    if isinstance(spec, FreezeLayerNorm):
        plan = ah.HookPlan()
        for slot in norms_of(adapter, spec.layer, spec.which):
            plan = plan + ah.freeze_norm(adapter, slot)
        return plan
    if isinstance(spec, Ablate):
        return _ablate_plan(adapter, spec)
    if isinstance(spec, TruncateWidth):
        return _truncate_plan(adapter, spec)
    check_specs((spec,))
    raise AssertionError("unreachable: check_specs refused it")


def check_specs(specs: tuple) -> None:
    """OptionError naming the spec classes for anything in `specs` that is not an ablation spec."""
    for spec in specs:
        if not isinstance(spec, SPEC_TYPES):
            names = ", ".join(t.__name__ for t in SPEC_TYPES)
            raise OptionError(f"Not an ablation spec: {spec!r} ({type(spec).__name__}); use one of {names}.")


def compile_specs(adapter: ModelAdapter, specs: Sequence[Spec]) -> tuple[list, list[list[int]]]:
    """All specs' hooks in one ordered list, and for each spec the indices of its hooks."""
    if not specs:
        raise OptionError("Got no ablation spec; give at least one, e.g. RemoveResidual(0, around='attn').")
    plans = []
    for spec in specs:
        try:
            plans.append(spec_plan(adapter, spec))
        except LensInversionError as error:
            raise type(error)(f"In {spec!r}: {error}") from None
    pairs: list[ah.HookPair] = []
    owners: list[list[int]] = [[] for _ in specs]
    for part in ("fixes", "writers", "readers"):
        for index, plan in enumerate(plans):
            for pair in getattr(plan, part):
                owners[index].append(len(pairs))
                pairs.append(pair)
    return pairs, owners
