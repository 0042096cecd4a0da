"""The tuned lens (Belrose et al. 2023): one affine translator per layer, trained by distillation.

Translator i maps the residual stream after i blocks (Hugging Face's `hidden_states[i]`) to
`h + A_i h + b_i`, the basis the model's final norm and unembedding read. A and b start at
zero (the logit lens) and are parametrised as a residual, so weight decay pulls them towards
the identity. This module holds the `TunedLens` class; its files (the `tuned-lens` 0.2
artifact format) are `tuned_io`, its training `tuned_training`, its evaluation `tuned_eval`.
"""

import functools
import os
import types
import warnings
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..callsite import user_stacklevel
from ..errors import OptionError, UnsupportedModelError
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.fingerprint import fingerprints_match, unembed_fingerprint, unembed_hash
from ..hooks.sites import Site
from .tuned_eval import HeldOutKL, evaluate_lens
from .tuned_io import load_tuned_lens, save_tuned_lens
from .tuned_training import TrainOptions, train_tuned_lens


class LensMismatchWarning(UserWarning):
    """A tuned-lens artifact's recorded `unembed_hash` differs from the model's (as tuned-lens warns)."""


def _translators(d_model: int, n: int, *, bias: bool = True) -> nn.ModuleList:
    layer = nn.Linear(d_model, d_model, bias=bias, dtype=torch.float32)
    nn.init.zeros_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return nn.ModuleList([deepcopy(layer) for _ in range(n)])


def _is_mode_call(args: tuple, kwargs: dict) -> bool:
    """Whether a call on an instance is nn.Module's `train(mode=True)`: no argument or one bool."""
    if not args:
        return set(kwargs) <= {"mode"}
    return len(args) == 1 and isinstance(args[0], bool) and not kwargs


class _TrainOrSetMode:
    """`TunedLens.train(model, corpus, ...)` trains a lens; `lens.train(mode)` sets nn.Module's training mode.

    nn.Module's `eval()` and a parent module's `train(mode)` call `train(mode)` on every child,
    so a call on an instance with no argument or a single bool goes to nn.Module; anything
    else (a model and a corpus) trains a new lens, as on the class.
    """

    def __init__(self, fit: Callable[..., "TunedLens"]) -> None:
        self.fit = fit
        self.__doc__ = fit.__doc__

    def __get__(self, instance: "TunedLens | None", owner: type) -> Callable:
        bound = types.MethodType(self.fit, owner)
        if instance is None:
            return bound

        @functools.wraps(self.fit)
        def train(*args, **kwargs):
            if _is_mode_call(args, kwargs):
                return nn.Module.train(instance, *args, **kwargs)
            return bound(*args, **kwargs)

        return train


class TunedLens(nn.Module):
    """Per-layer affine translators h + A h + b onto the final residual basis.

    Build one with `TunedLens.train(model, corpus)`, `TunedLens.load(directory)` (ours or a
    `tuned-lens` package artifact) or `TunedLens.from_model(model)` (identity: the logit
    lens); pass it as `lens=` to `li.logit_lens`.

    Attributes:
        d_model, n_layers: the model shape it fits.
        layer_translators: `Linear` i acts on the residual after i blocks (i = 0..n_layers-1).
        sublayer_translators: `Linear` l acts on block l's resid_mid, or None.
        metadata: model name, fingerprints, training options, tokens seen, held-out KL.
    """

    def __init__(self, *, d_model: int, n_layers: int, sublayers: bool = False, bias: bool = True,
                 metadata: dict | None = None) -> None:
        """Zero translators (the lens starts as the logit lens) for `n_layers` rows; `sublayers`: resid_mid too."""
        super().__init__()
        self.d_model, self.n_layers = int(d_model), int(n_layers)
        self.layer_translators = _translators(self.d_model, self.n_layers, bias=bias)
        self.sublayer_translators = _translators(self.d_model, self.n_layers, bias=bias) if sublayers else None
        self.metadata: dict = dict(metadata or {})
        self.requires_grad_(False)

    @property
    def has_sublayers(self) -> bool:
        """Whether the lens also translates each block's resid_mid."""
        return self.sublayer_translators is not None

    @property
    def model_name(self) -> str:
        """The model named in the metadata ("" when none)."""
        return str(self.metadata.get("model", ""))

    def __repr__(self) -> str:
        extra = ", sublayers" if self.has_sublayers else ""
        name = f" for {self.model_name!r}" if self.model_name else ""
        return f"TunedLens(d_model={self.d_model}, n_layers={self.n_layers}{extra}){name}"

    # ----- construction ---------------------------------------------------------------
    @classmethod
    def from_model(cls, model, *, sublayers: bool = False) -> "TunedLens":
        """An untrained (identity) lens shaped for `model` and bound to its fingerprint."""
        adapter = adapter_for(model)
        meta = {"model": str(getattr(adapter.cfg, "model_name", "") or ""),
                "fingerprint": unembed_fingerprint(adapter), "unembed_hash": unembed_hash(adapter)}
        lens = cls(d_model=adapter.d_model, n_layers=adapter.n_layers, sublayers=sublayers, metadata=meta)
        return lens.to(adapter.device)

    # `TunedLens.train(model, corpus)` is the training entry; on an instance, `train(mode)` stays
    # nn.Module's, which `lens.eval()` and a parent module's `.train(mode)` call (see _TrainOrSetMode).
    @classmethod
    def train(  # type: ignore[override]
        cls, model, corpus, /, *,
        steps: int = 250, tokens_per_step: int = 2**18, seq_len: int | None = None,
        loss: Literal["kl", "cross_entropy"] = "kl", optimizer: Literal["sgd", "adam"] = "sgd",
        lr_scale: float = 1.0, momentum: float = 0.9, weight_decay: float = 1e-3,
        warmup_steps: int | None = None, max_grad_norm: float = 1.0, seed: int = 0, sublayers: bool = False,
        shuffle_buffer: int = 1024, micro_batch: int | None = None, text_key: str = "text",
        checkpoint: "str | os.PathLike | None" = None, checkpoint_every: int = 50, held_out=None,
        progress: bool = True,
    ) -> "TunedLens":
        """Train a tuned lens by distillation to the model's final logits (Belrose et al. 2023).

        The model runs under no_grad; each translator's loss is backpropagated on its own, so
        at most one layer's [tokens, d_vocab] graph exists at a time. The defaults are the
        reference code's (SGD, Nesterov momentum, linear decay to 0). A corpus that runs out
        is read again (`metadata["corpus_passes"]`).

        Args:
            model: a TransformerLens model (bridge or HookedTransformer); left exactly as it was.
            corpus: texts, a .txt/.jsonl path (or a list of pathlib.Path), or a `datasets`
                dataset; see `lens_inversion.lens.token_stream`.
            steps: optimiser steps.
            tokens_per_step: tokens per step, a multiple of `seq_len`.
            seq_len: tokens per chunk (default: n_ctx, at most 2048).
            loss: "kl" (KL(final ‖ lens)) or "cross_entropy" (next token).
            optimizer: "sgd" (lr = lr_scale·(1 − momentum)) or "adam" (AMSGrad, lr = lr_scale·1e-3).
            lr_scale: factor on the optimiser's default learning rate.
            momentum: SGD's momentum, or Adam's β₁.
            weight_decay: L2 decay, towards the identity translator.
            warmup_steps: linear warm-up steps (default: 0 for SGD, min(1000, steps // 5) for Adam).
            max_grad_norm: the gradient norm is clipped to this every step.
            seed: seed of the corpus shuffle (the only randomness).
            sublayers: also train translators for each block's resid_mid.
            shuffle_buffer: chunks in the streaming shuffle buffer (0: corpus order).
            micro_batch: chunks per forward pass (default: ~128 MiB of float32 logits).
            text_key: the text field of .jsonl lines and dataset rows.
            checkpoint: a file for the whole training state, written every `checkpoint_every`
                steps and at the end; an existing one is resumed, bit-identical to one run.
            checkpoint_every: steps between checkpoints.
            held_out: a corpus to measure held-out KL per row on (`metadata["held_out"]`).
            progress: a tqdm bar with the loss and tokens/s.

        Returns:
            The trained TunedLens, bound to the model's fingerprint.
        """
        opts = TrainOptions(
            steps=steps, tokens_per_step=tokens_per_step, seq_len=seq_len, loss=loss, optimizer=optimizer,
            lr_scale=lr_scale, momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps,
            max_grad_norm=max_grad_norm, seed=seed, sublayers=sublayers, shuffle_buffer=shuffle_buffer,
            micro_batch=micro_batch, text_key=text_key,
        )
        return train_tuned_lens(model, corpus, opts, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                                held_out=held_out, progress=progress)

    train = _TrainOrSetMode(train.__func__)  # type: ignore[assignment, attr-defined]

    # ----- reading rows ---------------------------------------------------------------
    def translator_index(self, site: Site, layer: int | None) -> tuple[bool, int] | None:
        """(is a sublayer translator, index) of the translator for a row, or None for rows without one."""
        if site is Site.RESID_PRE and layer is not None and 0 <= layer < self.n_layers:
            return False, layer
        if site is Site.RESID_POST and layer is not None and 0 <= layer < self.n_layers - 1:
            return False, layer + 1
        if site is Site.RESID_MID and self.has_sublayers and layer is not None and 0 <= layer < self.n_layers:
            return True, layer
        return None

    def row_keys(self) -> list[tuple[Site, int]]:
        """The (site, layer) rows this lens translates, in row order (embedding first)."""
        keys = [(Site.RESID_PRE, 0)]
        for layer in range(self.n_layers):
            if self.has_sublayers:
                keys.append((Site.RESID_MID, layer))
            if layer < self.n_layers - 1:
                keys.append((Site.RESID_POST, layer))
        return keys

    def translate(self, resid: Float[Tensor, "*batch d_model"], index: int, *, sublayer: bool = False
                  ) -> Float[Tensor, "*batch d_model"]:
        """Return h + A h + b with translator `index` (tuned-lens's `transform_hidden(h, index)`)."""
        table = self.sublayer_translators if sublayer else self.layer_translators
        if table is None or not 0 <= index < len(table):
            raise OptionError(f"This tuned lens has no {'sub' if sublayer else ''}layer translator {index}; "
                              f"it has indices 0..{self.n_layers - 1}.")
        linear = table[index]
        assert isinstance(linear, nn.Linear)  # narrowing: `_translators` builds Linear layers only
        weight = linear.weight.to(resid.device)
        bias = None if linear.bias is None else linear.bias.to(resid.device)
        if resid.dtype == weight.dtype:
            return resid + nn.functional.linear(resid, weight, bias)
        h = resid.to(weight.dtype)
        return (h + nn.functional.linear(h, weight, bias)).to(resid.dtype)

    def translator_for(self, resid: Float[Tensor, "*batch d_model"], site: Site, layer: int | None
                       ) -> Float[Tensor, "*batch d_model"] | None:
        """The translated residual of a row (see `translator_index`), or None when the row has no translator."""
        found = self.translator_index(site, layer)
        if found is None:
            return None
        sublayer, index = found
        return self.translate(resid, index, sublayer=sublayer)

    # ----- fitting a model ------------------------------------------------------------
    def check_model(self, model) -> None:
        """Raise when the lens does not fit `model`: its width, depth, or recorded fingerprint.

        Raises:
            UnsupportedModelError: another d_model or number of layers.
            OptionError: the lens records an unembedding fingerprint and the model's differs.

        Warns:
            LensMismatchWarning: only tuned-lens's `unembed_hash` is recorded, and it differs.
        """
        adapter = adapter_for(model)
        if (adapter.d_model, adapter.n_layers) != (self.d_model, self.n_layers):
            raise UnsupportedModelError(
                f"This tuned lens is for a model with d_model={self.d_model} and {self.n_layers} layers; "
                f"the model has d_model={adapter.d_model} and {adapter.n_layers} layers."
            )
        recorded = self.metadata.get("fingerprint")
        if recorded is not None:
            if not fingerprints_match(recorded, unembed_fingerprint(adapter)):
                raise OptionError(
                    f"This tuned lens was trained for another model ({self.model_name or 'unnamed'}): its "
                    "unembedding fingerprint differs from this model's (other weights, or compatibility mode's "
                    "folded and centred ones). Train one for this model with li.TunedLens.train(model, corpus)."
                )
            return
        self._warn_on_hash(adapter)

    def _warn_on_hash(self, adapter: ModelAdapter) -> None:
        recorded = self.metadata.get("unembed_hash")
        if recorded and recorded != unembed_hash(adapter):
            warnings.warn(
                "The model's unembedding hash does not match the tuned lens's recorded unembed_hash; "
                "the lens may have been trained for another model (or another precision of it).",
                LensMismatchWarning, stacklevel=user_stacklevel(),
            )

    def bind(self, model) -> "TunedLens":
        """Check the lens against `model`, then record the model's fingerprint (if none was recorded)."""
        self.check_model(model)
        adapter = adapter_for(model)
        self.metadata.setdefault("fingerprint", unembed_fingerprint(adapter))
        self.metadata.setdefault("unembed_hash", unembed_hash(adapter))
        return self.to(adapter.device)

    # ----- files ----------------------------------------------------------------------
    def save(self, directory: "str | os.PathLike") -> Path:
        """Write the tuned-lens 0.2 artifact (`config.json`, `params.pt`) plus our metadata; return the folder."""
        return save_tuned_lens(self, directory)

    @classmethod
    def load(cls, directory: "str | os.PathLike", *, model=None) -> "TunedLens":
        """Read a lens saved by `save` or by the tuned-lens package; with `model`, check and bind it."""
        lens = load_tuned_lens(cls, directory)
        return lens if model is None else lens.bind(model)

    def evaluate(self, model, corpus, **options) -> HeldOutKL:
        """KL(final ‖ row) per row for this lens and the logit lens (the options: `evaluate_lens`)."""
        return evaluate_lens(model, self, corpus, **options)


__all__ = ["LensMismatchWarning", "TunedLens"]
