"""The tuned lens (Belrose et al. 2023): one affine translator per layer, trained by distillation.

Translator i maps the residual stream after i blocks (Hugging Face's `hidden_states[i]`) to
`h + A_i h + b_i`, the basis the model's final norm and unembedding read. A and b start at
zero (the logit lens) and are parametrised as a residual, so weight decay pulls them towards
the identity. Files follow the `tuned-lens` 0.2 package's artifact format (`config.json` +
`params.pt`, one `Linear` per index 0..n_layers-1), plus our `lens_inversion.json` metadata
and, for `sublayers=True` lenses (translators on each block's resid_mid too), `sublayers.pt`.
"""

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import OptionError, UnsupportedModelError
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.preserve import preserves_model
from ..hooks.sites import Site
from ..validation import (
    SEED_MAX,
    check_bool,
    check_choice,
    check_destination,
    check_int,
    check_number,
    check_seed,
    check_text,
)
from .token_stream import ChunkCount, check_corpus, token_chunks

LENS_TYPE = "linear_tuned_lens"
METADATA_FILE = "lens_inversion.json"
_FINGERPRINT_PROBES = 16
_FINGERPRINT_RTOL = 1e-2  # bf16/fp16 copies of a model stay well inside; another model is O(1) away


class LensMismatchWarning(UserWarning):
    """A tuned-lens artifact's recorded `unembed_hash` differs from the model's (as tuned-lens warns)."""


def unembed_fingerprint(adapter: ModelAdapter) -> list[float]:
    """16 fixed random bilinear probes uᵀ W_U v of the unembedding, normalised; robust to dtype.

    Two copies of one model (float32, bfloat16, another device) agree within 1%; another
    model, or the same one in compatibility mode (centred, folded W_U), does not.
    """
    weight = adapter.W_U.detach().float()  # [d_model, d_vocab]
    gen = torch.Generator().manual_seed(0)
    left = torch.randn(_FINGERPRINT_PROBES, weight.shape[0], generator=gen).to(weight.device)
    right = torch.randn(weight.shape[1], _FINGERPRINT_PROBES, generator=gen).to(weight.device)
    probes = ((left @ weight) * right.T).sum(-1) / math.sqrt(weight.numel())
    return [round(float(p), 6) for p in probes.cpu()]


def fingerprints_match(a: list[float], b: list[float]) -> bool:
    """Whether two `unembed_fingerprint`s name the same unembedding (relative L2 within 1%)."""
    if len(a) != len(b):
        return False
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((ta - tb).norm()) <= _FINGERPRINT_RTOL * max(float(ta.norm()), float(tb.norm()), 1e-12)


def _translators(d_model: int, n: int, *, bias: bool = True) -> nn.ModuleList:
    layer = nn.Linear(d_model, d_model, bias=bias, dtype=torch.float32)
    nn.init.zeros_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return nn.ModuleList([deepcopy(layer) for _ in range(n)])


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
        super().__init__()
        self.d_model, self.n_layers = int(d_model), int(n_layers)
        self.layer_translators = _translators(self.d_model, self.n_layers, bias=bias)
        self.sublayer_translators = _translators(self.d_model, self.n_layers, bias=bias) if sublayers else None
        self.metadata: dict = dict(metadata or {})
        self.requires_grad_(False)

    @property
    def has_sublayers(self) -> bool:
        return self.sublayer_translators is not None

    @property
    def model_name(self) -> str:
        return str(self.metadata.get("model", ""))

    def __repr__(self) -> str:
        extra = ", sublayers" if self.has_sublayers else ""
        name = f" for {self.model_name!r}" if self.model_name else ""
        return f"TunedLens(d_model={self.d_model}, n_layers={self.n_layers}{extra}){name}"

    # ----- construction ---------------------------------------------------------------
    @classmethod
    def from_model(cls, model, *, sublayers: bool = False) -> "TunedLens":
        """An untrained (identity) lens shaped for `model` and bound to its fingerprint."""
        from ..hooks.fingerprint import unembed_hash

        adapter = adapter_for(model)
        meta = {"model": str(getattr(adapter.cfg, "model_name", "") or ""),
                "fingerprint": unembed_fingerprint(adapter), "unembed_hash": unembed_hash(adapter)}
        lens = cls(d_model=adapter.d_model, n_layers=adapter.n_layers, sublayers=sublayers, metadata=meta)
        return lens.to(adapter.device)

    @classmethod
    def train(
        cls,
        model,
        corpus,
        /,
        *,
        steps: int = 250,
        tokens_per_step: int = 2**18,
        seq_len: int | None = None,
        loss: Literal["kl", "cross_entropy"] = "kl",
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr_scale: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-3,
        warmup_steps: int | None = None,
        max_grad_norm: float = 1.0,
        seed: int = 0,
        sublayers: bool = False,
        shuffle_buffer: int = 1024,
        micro_batch: int | None = None,
        text_key: str = "text",
        checkpoint: "str | os.PathLike | None" = None,
        checkpoint_every: int = 50,
        held_out=None,
        progress: bool = True,
    ) -> "TunedLens":
        """Train a tuned lens by distillation to the model's final logits (Belrose et al. 2023).

        The model runs under no_grad; each translator's loss is then backpropagated on its
        own, so at most one layer's [tokens, d_vocab] graph exists at a time. The defaults
        are the reference code's: SGD, Nesterov momentum 0.9, lr = lr_scale·(1 − β) (Adam:
        AMSGrad, lr = lr_scale·1e-3, warm-up min(1000, steps // 5)), weight decay 1e-3,
        gradient norm clipped to `max_grad_norm`, linear decay to 0. A corpus that runs out
        is read again (`metadata["corpus_passes"]`).

        Args:
            model: a TransformerLens model (bridge or HookedTransformer); left exactly as it was.
            corpus: texts, a .txt/.jsonl path (or a list of pathlib.Path), or a `datasets`
                dataset; see `lens_inversion.lens.token_stream`.
            steps: optimiser steps.
            tokens_per_step: tokens per step, a multiple of `seq_len`.
            seq_len: tokens per chunk (default: n_ctx, at most 2048).
            loss: "kl" (KL(final ‖ lens)) or "cross_entropy" (next token).
            optimizer: "sgd" (the reference default) or "adam".
            lr_scale: factor on the optimiser's default learning rate.
            momentum: SGD's momentum, or Adam's β₁.
            weight_decay: L2 decay, towards the identity translator.
            warmup_steps: linear warm-up steps (default: 0 for SGD, as above for Adam).
            max_grad_norm: the gradient norm is clipped to this every step.
            seed: seed of the corpus shuffle (the only randomness).
            sublayers: also train translators for each block's resid_mid.
            shuffle_buffer: chunks in the streaming shuffle buffer (0: corpus order).
            micro_batch: chunks per forward pass (default: ~128 MiB of float32 logits).
            text_key: the text field of .jsonl lines and dataset rows.
            checkpoint: a file for the whole training state, written every
                `checkpoint_every` steps and at the end; when it exists, training resumes
                from it and ends bit-identical to an uninterrupted run.
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
        from ..hooks.fingerprint import unembed_hash

        recorded = self.metadata.get("unembed_hash")
        if recorded and recorded != unembed_hash(adapter):
            warnings.warn(
                "The model's unembedding hash does not match the tuned lens's recorded unembed_hash; "
                "the lens may have been trained for another model (or another precision of it).",
                LensMismatchWarning, stacklevel=3,
            )

    def bind(self, model) -> "TunedLens":
        """Check the lens against `model`, then record the model's fingerprint (if none was recorded)."""
        from ..hooks.fingerprint import unembed_hash

        self.check_model(model)
        adapter = adapter_for(model)
        self.metadata.setdefault("fingerprint", unembed_fingerprint(adapter))
        self.metadata.setdefault("unembed_hash", unembed_hash(adapter))
        return self.to(adapter.device)

    # ----- files ----------------------------------------------------------------------
    def save(self, directory: "str | os.PathLike") -> Path:
        """Write the tuned-lens 0.2 artifact (`config.json`, `params.pt`) plus our metadata; return the folder."""
        return _save(self, directory)

    @classmethod
    def load(cls, directory: "str | os.PathLike", *, model=None) -> "TunedLens":
        """Read a lens saved by `save` or by the tuned-lens package; with `model`, check and bind it."""
        lens = _load(cls, directory)
        return lens if model is None else lens.bind(model)

    def evaluate(self, model, corpus, **options) -> "HeldOutKL":
        """KL(final ‖ row) per row for this lens and the logit lens (the options: `evaluate_lens`)."""
        return evaluate_lens(model, self, corpus, **options)


@dataclass(frozen=True, kw_only=True)
class HeldOutKL:
    """Mean KL(final ‖ lens) in nats per translated row, for this lens and the logit lens."""

    rows: list[str]
    kl: list[float]
    logit_kl: list[float]
    tokens: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"{'row':>8} {'tuned':>8} {'logit':>8}"]
        lines += [f"{r:>8} {t:8.4f} {g:8.4f}" for r, t, g in zip(self.rows, self.kl, self.logit_kl, strict=True)]
        return "\n".join(lines + [f"({self.tokens} tokens)"])


def row_label(site: Site, layer: int, *, sublayers: bool) -> str:
    """The logit lens's label of a row: "embed", "2", or with sublayers "2 attn" / "2 mlp"."""
    if site is Site.RESID_PRE:
        return "embed"
    if site is Site.RESID_MID:
        return f"{layer} attn"
    return f"{layer} mlp" if sublayers else str(layer)


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or OptionError saying what is wrong with it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OptionError(f"Cannot read {str(path)!r} as JSON: {error}.") from None
    if not isinstance(value, dict):
        raise OptionError(f"{str(path)!r} must hold a JSON object; it holds a {type(value).__name__}.")
    return value



# ----- the tuned-lens 0.2 artifact format ---------------------------------------------
def _directory(directory, *, what: str) -> Path:
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise OptionError(f"{what} must be a directory path (str or pathlib.Path); got {type(directory).__name__} "
                          f"{directory!r}.")
    return Path(directory).expanduser()


def _cpu_state(table: nn.ModuleList) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in table.state_dict().items()}


def _save(lens: TunedLens, directory) -> Path:
    path = _directory(directory, what="directory")
    if path.exists() and not path.is_dir():
        raise OptionError(f"Cannot save the tuned lens to {str(path)!r}: it is a file, not a directory.")
    path.mkdir(parents=True, exist_ok=True)
    config = {  # tuned-lens 0.2's TunedLensConfig, its field order
        "base_model_name_or_path": lens.model_name, "d_model": lens.d_model, "num_hidden_layers": lens.n_layers,
        "bias": lens.layer_translators[0].bias is not None, "base_model_revision": lens.metadata.get("revision"),
        "unembed_hash": lens.metadata.get("unembed_hash"), "lens_type": LENS_TYPE,
    }
    torch.save(_cpu_state(lens.layer_translators), path / "params.pt")
    (path / "config.json").write_text(json.dumps(config))
    if lens.sublayer_translators is not None:
        torch.save(_cpu_state(lens.sublayer_translators), path / "sublayers.pt")
    meta = {"format": "lens_inversion.tuned_lens", "version": 1, "sublayers": lens.has_sublayers, **lens.metadata}
    (path / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return path


def _config_shape(config: dict, where: Path) -> tuple[int, int, bool]:
    """(d_model, num_hidden_layers, bias) of a tuned-lens config, or OptionError naming the bad key."""
    lens_type = config.get("lens_type", LENS_TYPE)
    if lens_type != LENS_TYPE:
        raise OptionError(f"{str(where)!r} holds a {lens_type!r}; only {LENS_TYPE!r} lenses can be read.")
    values = []
    for key in ("d_model", "num_hidden_layers"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise OptionError(f"{str(where)!r} must give {key!r} as a positive integer; got {value!r}.")
        values.append(value)
    bias = config.get("bias", True)
    if not isinstance(bias, bool):
        raise OptionError(f"{str(where)!r} must give 'bias' as true or false; got {bias!r}.")
    return values[0], values[1], bias


def _load_state(table: nn.ModuleList, file: Path) -> None:
    """Load a translator state dict from `file` into `table`, or OptionError naming what differs."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors of every kind: a truncated or foreign file
        raise OptionError(f"Cannot read {str(file)!r} as a PyTorch state dict: {error}") from None
    expected = table.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise OptionError(f"{str(file)!r} must hold a dict of tensors ('0.weight', '0.bias', ...).")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise OptionError(f"{str(file)!r} does not match its config: missing keys {missing[:6]}, "
                          f"unexpected keys {unexpected[:6]}.")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise OptionError(f"{str(file)!r}: {key!r} has shape {tuple(value.shape)} but should have shape "
                              f"{tuple(expected[key].shape)}.")
    table.load_state_dict({k: v.float() for k, v in state.items()})


def _load(cls, directory) -> TunedLens:
    path = _directory(directory, what="The tuned lens directory")
    if not path.is_dir():
        raise OptionError(f"No tuned lens at {str(path)!r}: {'it is a file, not' if path.exists() else 'no such'} "
                          "directory (a tuned lens is a directory with config.json and params.pt).")
    missing = [name for name in ("config.json", "params.pt") if not (path / name).is_file()]
    if missing:
        raise OptionError(f"{str(path)!r} is not a tuned-lens artifact: {' and '.join(missing)} missing "
                          "(a tuned lens is a directory with config.json and params.pt).")
    config = read_json(path / "config.json")
    d_model, n_layers, bias = _config_shape(config, path / "config.json")
    meta = read_json(path / METADATA_FILE) if (path / METADATA_FILE).is_file() else {}
    sublayers = meta.pop("sublayers", False) is True
    if sublayers and not (path / "sublayers.pt").is_file():
        raise OptionError(f"{str(path)!r}: {METADATA_FILE} lists sublayer translators but sublayers.pt is missing.")
    for key in ("format", "version"):
        meta.pop(key, None)
    meta["model"] = config.get("base_model_name_or_path") or meta.get("model", "")
    meta["unembed_hash"] = config.get("unembed_hash")
    if config.get("base_model_revision"):
        meta["revision"] = config["base_model_revision"]
    lens = cls(d_model=d_model, n_layers=n_layers, sublayers=sublayers, bias=bias, metadata=meta)
    _load_state(lens.layer_translators, path / "params.pt")
    if sublayers:
        _load_state(lens.sublayer_translators, path / "sublayers.pt")
    return lens



# ----- training -------------------------------------------------------------------------
MICRO_BATCH_BYTES = 128 * 2**20  # one float32 [tokens, d_vocab] tensor of a micro-batch at most
CHECKPOINT_FORMAT = "lens_inversion.tuned_lens.checkpoint"


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """Everything that fixes a trained tuned lens (recorded in its metadata and checkpoints)."""

    steps: int = 250
    tokens_per_step: int = 2**18
    seq_len: int | None = None  # None: the model's n_ctx, at most 2048
    loss: str = "kl"
    optimizer: str = "sgd"
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    warmup_steps: int | None = None  # None: 0 for SGD, min(1000, steps // 5) for Adam
    max_grad_norm: float = 1.0
    seed: int = 0
    sublayers: bool = False
    shuffle_buffer: int = 1024
    micro_batch: int | None = None  # chunks per forward; None: from MICRO_BATCH_BYTES
    text_key: str = "text"

    def check(self) -> None:
        """Raise OptionError for any value outside its valid range, naming the valid choices."""
        check_int("steps", self.steps, low=1)
        check_int("tokens_per_step", self.tokens_per_step, low=1)
        check_int("seq_len", self.seq_len, low=2, allow_none=True)
        check_choice("loss", self.loss, ("kl", "cross_entropy"))
        check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        check_number("lr_scale", self.lr_scale, low=0, low_open=True)
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        check_int("warmup_steps", self.warmup_steps, low=0, high=self.steps - 1, allow_none=True)
        check_number("max_grad_norm", self.max_grad_norm, low=0, low_open=True)
        check_seed(self.seed, allow_none=False)
        check_bool("sublayers", self.sublayers)
        check_int("shuffle_buffer", self.shuffle_buffer, low=0)
        check_int("micro_batch", self.micro_batch, low=1, allow_none=True)
        check_text("text_key", self.text_key)

    def resolved(self, adapter: ModelAdapter) -> "TrainOptions":
        """The options with the model's defaults filled in, checked against the model."""
        seq_len = self.seq_len or min(adapter.n_ctx, 2048)
        if seq_len > adapter.n_ctx:
            raise OptionError(f"seq_len={seq_len} is longer than the model's context (n_ctx={adapter.n_ctx}).")
        if self.tokens_per_step % seq_len:
            low = max(seq_len, self.tokens_per_step // seq_len * seq_len)
            raise OptionError(f"tokens_per_step={self.tokens_per_step} must be a multiple of seq_len={seq_len} "
                              f"(whole chunks per step): for example {low} or {low + seq_len}.")
        per_step = self.tokens_per_step // seq_len
        auto = max(1, MICRO_BATCH_BYTES // (seq_len * adapter.d_vocab_out * 4))
        warmup = self.warmup_steps if self.warmup_steps is not None else (
            min(1000, self.steps // 5) if self.optimizer == "adam" else 0)
        return replace(self, seq_len=seq_len, micro_batch=min(per_step, self.micro_batch or auto),
                       warmup_steps=warmup)

    @property
    def base_lr(self) -> float:
        """SGD: lr_scale · (1 − β), undoing PyTorch's 1/(1 − β) momentum gain; Adam: lr_scale · 1e-3."""
        return self.lr_scale * (1 - self.momentum) if self.optimizer == "sgd" else self.lr_scale * 1e-3

    def lr_factor(self, step: int) -> float:
        """Linear warm-up to 1 over `warmup_steps`, then linear decay to 0 at `steps`."""
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return max(0.0, (self.steps - step) / max(1, self.steps - self.warmup_steps))


def train_tuned_lens(model, corpus, opts: TrainOptions, *, checkpoint=None, checkpoint_every: int = 50,
                     held_out=None, progress: bool = True) -> TunedLens:
    """`TunedLens.train` with its options as a TrainOptions: checked here, before the model is touched."""
    opts.check()
    check_int("checkpoint_every", checkpoint_every, low=1)
    check_bool("progress", progress)
    ckpt = None if checkpoint is None else check_destination(checkpoint, name="checkpoint", example="lens.ckpt")
    check_corpus(corpus, text_key=opts.text_key)
    if held_out is not None:
        check_corpus(held_out)
    return _train(model, corpus, opts=opts, checkpoint=ckpt, every=checkpoint_every, held_out=held_out,
                  progress=progress)


@preserves_model
def _train(model, corpus, *, opts: TrainOptions, checkpoint: Path | None, every: int, held_out, progress: bool):
    adapter = adapter_for(model)
    adapter.check_lens_readout()
    opts = opts.resolved(adapter)
    lens = TunedLens.from_model(adapter, sublayers=opts.sublayers).requires_grad_(True)
    optimizer = _optimizer(opts, list(lens.parameters()))
    run = _Run(step=0, tokens=0, passes=1, losses=[], seconds=0.0)
    batches = _step_batches(adapter, corpus, opts, run)
    digest = hashlib.sha256()
    if checkpoint is not None and checkpoint.is_file() and checkpoint.stat().st_size:
        run = _resume(checkpoint, lens, optimizer, opts, batches, digest)
    bar = tqdm(total=opts.steps, initial=run.step, desc="tuned lens", disable=not progress, leave=False)
    start, start_tokens = time.perf_counter() - run.seconds, run.tokens
    t0 = time.perf_counter()
    for step in range(run.step, opts.steps):
        batch = next(batches)
        digest.update(batch.numpy().tobytes())
        run.losses = _train_step(adapter, lens, optimizer, batch, opts, step)
        run.step, run.tokens, run.seconds = step + 1, run.tokens + batch.numel(), time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{sum(run.losses):.3f}", tok_s=f"{(run.tokens - start_tokens) / (time.perf_counter() - t0):,.0f}")
        if checkpoint is not None and (run.step % every == 0 or run.step == opts.steps):
            _save_checkpoint(checkpoint, lens, optimizer, opts, run, digest.hexdigest())
    bar.close()
    lens.requires_grad_(False)
    labels = [row_label(s, layer, sublayers=opts.sublayers) for s, layer in lens.row_keys()]
    lens.metadata.update(training=asdict(opts), tokens_seen=run.tokens, corpus_passes=run.passes,
                         train_seconds=round(run.seconds, 1), final_loss=dict(zip(labels, run.losses, strict=True)))
    if held_out is not None:
        lens.metadata["held_out"] = evaluate_lens(adapter, lens, held_out, seq_len=opts.seq_len).to_dict()
    return lens


@dataclass
class _Run:
    step: int
    tokens: int
    passes: int
    losses: list[float]
    seconds: float


def _optimizer(opts: TrainOptions, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.base_lr, momentum=opts.momentum, nesterov=True,
                               weight_decay=opts.weight_decay)
    return torch.optim.Adam(params, lr=opts.base_lr, betas=(opts.momentum, 0.999), amsgrad=True,
                            weight_decay=opts.weight_decay)


def _step_batches(adapter, corpus, opts: TrainOptions, run: _Run) -> Iterator[Tensor]:
    """[tokens_per_step / seq_len, seq_len] batches, forever: the corpus is read again when it ends."""
    per_step = opts.tokens_per_step // opts.seq_len
    one_shot = iter(corpus) is corpus if not isinstance(corpus, (str, os.PathLike)) else False
    while True:
        count, buffer = ChunkCount(), []
        seed = (opts.seed + run.passes - 1) % SEED_MAX
        for chunk in token_chunks(adapter, corpus, seq_len=opts.seq_len, text_key=opts.text_key,
                                  shuffle_buffer=opts.shuffle_buffer, seed=seed, count=count):
            buffer.append(chunk)
            if len(buffer) == per_step:
                yield torch.stack(buffer)
                buffer = []
        if run.passes == 1 and count.chunks < per_step:
            raise OptionError(
                f"The corpus has {count.tokens} tokens ({count.chunks} whole chunks of seq_len={opts.seq_len}); one "
                f"step needs tokens_per_step={opts.tokens_per_step} tokens ({per_step} chunks). Give more text, or "
                "lower tokens_per_step or seq_len."
            )
        if one_shot:
            raise OptionError(
                f"The corpus is a one-shot iterator and ran out after {count.tokens} tokens, before the "
                f"{opts.steps} steps of {opts.tokens_per_step} tokens; give a list, files or a dataset (read "
                "again when they end), more text, or fewer steps."
            )
        run.passes += 1


def _train_step(adapter, lens: TunedLens, optimizer, batch: Tensor, opts: TrainOptions, step: int) -> list[float]:
    """One optimiser step on `batch`; the mean loss of each translator (nats per token)."""
    for group in optimizer.param_groups:
        group["lr"] = opts.base_lr * opts.lr_factor(step)
    optimizer.zero_grad(set_to_none=True)
    n_tokens = batch.shape[0] * (batch.shape[1] - (opts.loss == "cross_entropy"))
    totals = [0.0] * len(lens.row_keys())
    for micro in batch.split(opts.micro_batch):
        for i, value in enumerate(_accumulate(adapter, lens, micro.to(adapter.device), opts.loss, n_tokens)):
            totals[i] += value
    nn.utils.clip_grad_norm_(lens.parameters(), opts.max_grad_norm)
    optimizer.step()
    return [t / n_tokens for t in totals]


def _residuals(adapter, lens: TunedLens, tokens: Tensor) -> tuple[dict, Tensor]:
    """Every translated row's residual stream (detached, [batch, pos, d]) and the model's logits."""
    keys = lens.row_keys()
    with torch.no_grad():
        run = adapter.run(tokens, capture=keys, need_logits=True)
        acts = {k: run[k].detach().reshape(*tokens.shape, -1) for k in keys}
    return acts, run.logits.detach()


def _accumulate(adapter, lens: TunedLens, tokens: Tensor, loss: str, n_tokens: int) -> list[float]:
    """Backpropagate each translator's summed loss / n_tokens, one at a time; return the sums."""
    acts, logits = _residuals(adapter, lens, tokens)
    with torch.no_grad():
        target = _Distill(logits) if loss == "kl" else tokens[:, 1:].reshape(-1)
    del logits
    sums = []
    for key in lens.row_keys():
        z = adapter.lens_logits(lens.translator_for(acts[key], *key))
        if loss == "kl":
            value = target.kl_sum(z)
        else:
            z = z[:, :-1].reshape(-1, z.shape[-1]).float()
            value = nn.functional.cross_entropy(z, target, reduction="sum")
        (value / n_tokens).backward()
        sums.append(float(value.detach()))
    return sums


class _Distill:
    """KL(final ‖ softmax(z)) summed over tokens, against fixed final logits; gradient softmax(z) − p."""

    def __init__(self, final: Float[Tensor, "*tokens d_vocab"]) -> None:
        logp = final.float().log_softmax(-1)
        self.p = logp.exp()
        self.neg_entropy = _dot(self.p, logp.nan_to_num_(0.0, neginf=0.0))  # Σ p log p (0 log 0 = 0)

    def kl_sum(self, z: Float[Tensor, "*tokens d_vocab"]) -> Tensor:
        if torch.is_grad_enabled() and z.requires_grad:
            return _KLFromLogits.apply(z, self.p, self.neg_entropy)
        return self.neg_entropy - _dot(self.p, z.float().log_softmax(-1))


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ a·b over all elements, without a temporary of their size."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


class _KLFromLogits(torch.autograd.Function):
    """Σ p (log p − log_softmax z) with one [tokens, d_vocab] temporary: the gradient softmax(z) − p."""

    @staticmethod
    def forward(ctx, z, p, neg_entropy):
        log_q = z.float().log_softmax(-1)
        value = neg_entropy - _dot(p, log_q)
        ctx.save_for_backward(log_q.exp_().sub_(p))
        return value

    @staticmethod
    def backward(ctx, upstream):
        (grad,) = ctx.saved_tensors
        return grad.mul_(upstream), None, None


def _save_checkpoint(path: Path, lens: TunedLens, optimizer, opts: TrainOptions, run: _Run, digest: str) -> None:
    state = {"format": CHECKPOINT_FORMAT, "options": asdict(opts), "fingerprint": lens.metadata["fingerprint"],
             "lens": lens.state_dict(), "optimizer": optimizer.state_dict(), "run": asdict(run), "digest": digest}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resume(path: Path, lens: TunedLens, optimizer, opts: TrainOptions, batches, digest) -> _Run:
    """Load a checkpoint made with the same options and model, and replay the corpus up to it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise OptionError(f"Cannot read the checkpoint {str(path)!r}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise OptionError(f"{str(path)!r} is not a tuned-lens training checkpoint; delete it or give another path.")
    if not fingerprints_match(state["fingerprint"], lens.metadata["fingerprint"]):
        raise OptionError(f"The checkpoint {str(path)!r} was made on another model; delete it or give another path.")
    here, there = asdict(opts), state["options"]
    differ = [f"{k}: {there.get(k)!r} there, {v!r} here" for k, v in here.items() if there.get(k) != v]
    if differ:
        raise OptionError(f"The checkpoint {str(path)!r} was made with other options ({'; '.join(differ)}); "
                          "pass the same options to resume, or delete it to start again.")
    lens.load_state_dict(state["lens"])
    optimizer.load_state_dict(state["optimizer"])
    run = _Run(**state["run"])
    for _ in range(run.step):
        digest.update(next(batches).numpy().tobytes())
    if digest.hexdigest() != state["digest"]:
        raise OptionError(f"The checkpoint {str(path)!r} was made on another corpus (its first {run.step} steps' "
                          "tokens differ); pass the same corpus to resume, or delete it to start again.")
    return run


# ----- evaluation -----------------------------------------------------------------------
@preserves_model
def evaluate_lens(model, lens: TunedLens, corpus, *, seq_len: int | None = None, max_tokens: int | None = None,
                  micro_batch: int | None = None, text_key: str = "text") -> HeldOutKL:
    """Mean KL(final ‖ row) in nats per translated row, for `lens` and for the logit lens.

    The corpus is cut into `seq_len` chunks (the last, shorter one included) and read up to
    `max_tokens` tokens; every position of every chunk counts once.
    """
    adapter = adapter_for(model)
    check_int("seq_len", seq_len, low=1, high=adapter.n_ctx, allow_none=True)
    check_int("max_tokens", max_tokens, low=1, allow_none=True)
    check_int("micro_batch", micro_batch, low=1, allow_none=True)
    lens.check_model(adapter)
    seq_len = seq_len or min(adapter.n_ctx, 2048)
    micro = micro_batch or max(1, MICRO_BATCH_BYTES // (seq_len * adapter.d_vocab_out * 4))
    keys = lens.row_keys()
    sums = torch.zeros(2, len(keys), dtype=torch.float64)
    tokens = 0
    for batch in _eval_batches(adapter, corpus, seq_len, micro, max_tokens, text_key):
        acts, logits = _residuals(adapter, lens, batch.to(adapter.device))
        with torch.no_grad():
            target = _Distill(logits)
            for i, key in enumerate(keys):
                sums[0, i] += float(target.kl_sum(adapter.lens_logits(lens.translator_for(acts[key], *key))))
                sums[1, i] += float(target.kl_sum(adapter.lens_logits(acts[key])))
        tokens += batch.numel()
    if tokens == 0:
        raise OptionError("The held-out corpus holds no tokens; give at least one non-empty text.")
    mean = (sums / tokens).tolist()
    return HeldOutKL(rows=[row_label(s, layer, sublayers=lens.has_sublayers) for s, layer in keys],
                     kl=mean[0], logit_kl=mean[1], tokens=tokens)


def _eval_batches(adapter, corpus, seq_len: int, micro: int, max_tokens: int | None, text_key: str):
    """Batches of equal-length chunks, up to `max_tokens` tokens (the last chunk cut to fit)."""
    buffer, seen = [], 0
    for chunk in token_chunks(adapter, corpus, seq_len=seq_len, drop_last=False, text_key=text_key):
        if max_tokens is not None:
            chunk = chunk[: max_tokens - seen]
        if buffer and (len(buffer) == micro or len(chunk) != len(buffer[0])):
            yield torch.stack(buffer)
            buffer = []
        if len(chunk):
            buffer.append(chunk)
        seen += len(chunk)
        if max_tokens is not None and seen >= max_tokens:
            break
    if buffer:
        yield torch.stack(buffer)


__all__ = [
    "LENS_TYPE", "HeldOutKL", "LensMismatchWarning", "TrainOptions", "TunedLens", "evaluate_lens", "fingerprints_match",
    "train_tuned_lens", "unembed_fingerprint",
]
