"""Turn "a prompt or an activation" plus targets into the activations to invert."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import PromptError, TargetError
from ..hooks import ModelAdapter, Target, adapter_for
from ..validation import read_prompt


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What the inversion must reproduce: one [batch, tokens, features] tensor per target."""

    targets: tuple[Target, ...]  # resolved (layer >= 0)
    values: tuple[Tensor, ...]  # detached, float32
    n_pos: int  # sequence length of the hidden input
    true_tokens: Tensor | None  # [batch, n_pos] when a prompt was given

    @property
    def batch(self) -> int:
        """Number of observations (prompts) to invert."""
        return self.values[0].shape[0]


def as_targets(model, target: "str | Target | Sequence[str | Target]") -> tuple[Target, ...]:
    """Parse and resolve one target or a list of them (several layers at once)."""
    if not isinstance(target, (str, Target, list, tuple)):
        raise TargetError(
            "target must be a Target, a target string such as 'blocks.0.hook_resid_post', or a list of them; "
            f"got {type(target).__name__} {target!r}."
        )
    raw = [target] if isinstance(target, (str, Target)) else list(target)
    if not raw:
        raise TargetError(f"Give at least one target, e.g. 'blocks.0.hook_resid_post'; got {target!r}.")
    return tuple(Target.parse(t).resolve(model) for t in raw)


def _is_activation(prompt_or_activation) -> bool:
    """A float tensor, or a non-empty list of them (one per target), rather than a prompt."""
    if isinstance(prompt_or_activation, Tensor):
        return prompt_or_activation.is_floating_point()
    return isinstance(prompt_or_activation, (list, tuple)) and bool(prompt_or_activation) and all(
        isinstance(v, Tensor) and v.is_floating_point() for v in prompt_or_activation
    )


def _check_activation(adapter: ModelAdapter, t: Target, v: Tensor) -> None:
    """One user activation: [batch >= 1, tokens, features], real, finite (PromptError otherwise)."""
    if v.ndim != 3:
        raise PromptError(
            f"Activation for {t} must be [batch, tokens, features] (or [tokens, features]); got shape {tuple(v.shape)}."
        )
    if v.shape[0] == 0:
        raise PromptError(
            f"Activation for {t} has an empty batch, shape {tuple(v.shape)}; "
            "give at least one row, [batch >= 1, tokens, features]."
        )
    if v.device.type == "meta":
        raise PromptError(
            f"Activation for {t} is on the 'meta' device and holds no values; "
            f"give a real tensor (the model is on {adapter.device})."
        )
    bad = int((~torch.isfinite(v)).sum())
    if bad:
        raise PromptError(f"Activation for {t} contains NaN or inf values ({bad} of {v.numel()} entries); give finite values.")


def _check_shape(adapter: ModelAdapter, t: Target, v: Tensor, n_pos: int) -> None:
    """The activation's [tokens, features] match the target's selection of an n_pos-token input."""
    width = adapter.d_vocab_out if t.site.value == "logits" else adapter.d_model
    expected = (len(t.token_positions(n_pos)), len(t.feature_indices(width)))
    if tuple(v.shape[1:]) != expected:
        raise PromptError(
            f"Activation for {t} has shape {tuple(v.shape)} but should be [batch, {expected[0]}, {expected[1]}] "
            f"for a {n_pos}-token input."
        )


def _given_activations(adapter: ModelAdapter, activations, targets: tuple[Target, ...], n_pos: int | None) -> Observed:
    """User activations (one per target), checked, as float32 on the model's device."""
    values = [v[None] if v.ndim == 2 else v for v in ([activations] if isinstance(activations, Tensor) else activations)]
    if len(values) != len(targets):
        raise PromptError(f"Got {len(values)} activation tensors for {len(targets)} targets; give one per target.")
    for t, v in zip(targets, values, strict=False):
        _check_activation(adapter, t, v)
    if n_pos is None:
        n_pos = values[0].shape[1]
    if isinstance(n_pos, bool) or not isinstance(n_pos, int) or not 0 < n_pos <= adapter.n_ctx:
        raise PromptError(f"n_pos={n_pos!r} must lie in 1..{adapter.n_ctx} (an integer within the model's context).")
    for t, v in zip(targets, values, strict=False):
        _check_shape(adapter, t, v, n_pos)
    return Observed(targets=targets, values=tuple(v.detach().to(adapter.device, torch.float32) for v in values),
                    n_pos=n_pos, true_tokens=None)


def observe(
    adapter: ModelAdapter,
    prompt_or_activation,
    targets: tuple[Target, ...],
    *,
    n_pos: int | None = None,
) -> Observed:
    """Run the model on a prompt, or accept user activations (one tensor per target).

    A raw activation is the target's selection, [batch, tokens, features] (or without batch);
    `n_pos` gives the hidden prompt's length when the token slice does not cover it all.
    Activations of any floating dtype are converted to float32 on the model's device, without
    a warning (lossless from float16 and bfloat16); distances are then measured in float32,
    so a half-precision activation of a float32 model may not verify at the default tolerance.
    """
    adapter = adapter_for(adapter)
    if _is_activation(prompt_or_activation):
        return _given_activations(adapter, prompt_or_activation, targets, n_pos)
    prompt = read_prompt(adapter, prompt_or_activation)
    if prompt.batch > 1 and int(prompt.lengths.min()) != prompt.pos:
        raise PromptError("Inverting a batch of prompts needs prompts of equal token length.")
    with torch.no_grad():
        capture = adapter.run(prompt.tokens, capture=[t.key for t in targets])
    values = tuple(t.select(capture[t.key]).detach().float() for t in targets)
    return Observed(targets=targets, values=values, n_pos=prompt.pos, true_tokens=prompt.tokens)
