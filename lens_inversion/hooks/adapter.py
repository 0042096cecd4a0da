"""One uniform view of a TransformerLens model, whatever its backend.

TransformerBridge (4.x, raw or compatibility mode) and HookedTransformer (3.x): every
difference between backends is handled here.
"""

import weakref
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from .._typing import Embeds, Tokens
from ..errors import PromptError, TargetError, UnsupportedModelError
from .execution import Capture, CapturePlan, forward_tokens, mask_breaks_causality, run_full, run_padded
from .interventions import HookFn, attached
from .sites import Site, site_hook_name

PromptLike = "str | Sequence[str] | Tensor"


# Bridge components on the readout path that `ln_final -> unembed` would skip and that we
# cannot compose in the model's order (BERT's dense/act/LayerNorm head, OPT-350m's
# project_out, DeepSeek-V4's hc_head...), after TransformerLens 4.3's logit_readout list.
# ModernBERT's whole `prediction_head` module is composed instead (see `lens_logits`).
_SPLIT_READOUT_COMPONENTS = ("mlm_head", "project_out", "hc_head", "sigma_map", "classifier_ln")


def unwrap_model(model) -> nn.Module:
    """The TransformerLens model behind a model or a ModelAdapter; UnsupportedModelError for anything else."""
    inner = model.model if isinstance(model, ModelAdapter) else model
    check_model(inner)
    return inner


def check_model(model) -> str:
    """Return the backend ("bridge" or "hooked") of `model`, or raise UnsupportedModelError."""
    return _backend(model)


def _backend(model) -> str:
    if not isinstance(model, nn.Module) or not hasattr(model, "cfg") or not hasattr(model, "hook_dict"):
        raise UnsupportedModelError(
            f"Expected a TransformerLens model (TransformerBridge or HookedTransformer), "
            f"got {_describe(model)}. Load one with li.load_model(...)."
        )
    if hasattr(model, "original_model") or type(model).__name__.endswith("Bridge"):
        return "bridge"
    if hasattr(model, "blocks") and hasattr(model, "unembed"):
        return "hooked"
    raise UnsupportedModelError(f"{type(model).__name__} is a hooked module but not a transformer we support.")


def _check_residual_stream(model) -> None:
    """Refuse a bridge without one residual stream per block: every capability reads it."""
    blocks = getattr(model, "_modules", {}).get("blocks")
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        stacks = [name for name, m in model.named_children() if isinstance(m, nn.ModuleList)]
        raise UnsupportedModelError(
            f"This {type(model).__name__} has no `blocks` stack (its layer stacks: {stacks or 'none'}); "
            "lens_inversion reads and writes the residual stream between blocks, so it cannot run on this model."
        )
    missing = [f"blocks.{i}.hook_resid_post" for i in range(len(blocks)) if f"blocks.{i}.hook_resid_post" not in model.hook_dict]
    if missing:
        raise UnsupportedModelError(
            f"This model's blocks expose no single residual stream ({missing[0]} is missing: they carry "
            "several streams the model mixes, e.g. DeepSeek-V4's hyper-connections); lens_inversion reads and "
            "writes one residual stream per block, so it cannot run on this model."
        )


def _describe(value) -> str:
    """A short description of an unsupported model argument: its type, and the value when it is short."""
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 40 else type(value).__name__


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """Tokenized prompt(s), right-padded; `lengths` counts each row's real tokens."""

    tokens: Tokens
    lengths: Int[Tensor, " batch"]
    str_tokens: list[list[str]]
    batched: bool  # False when the user gave a single prompt

    @property
    def batch(self) -> int:
        """Number of prompts (rows)."""
        return self.tokens.shape[0]

    @property
    def pos(self) -> int:
        """Padded length: the longest prompt's token count."""
        return self.tokens.shape[1]


class ModelAdapter:
    """Backend-independent access to sizes, weights, tokenization and hooked runs."""

    def __init__(self, model) -> None:
        """Wrap a TransformerBridge or HookedTransformer (or the model behind another adapter)."""
        model = unwrap_model(model)
        self.backend = _backend(model)
        self.model = model
        self.cfg = model.cfg
        if self.is_bridge:
            _check_residual_stream(model)
            wire_bridge_internals(model)
            mask_breaks_causality(model)
            self._output_transform  # noqa: B018 - measured before any hook of ours is attached

    # ----- sizes and weights ---------------------------------------------------------
    @property
    def is_bridge(self) -> bool:
        """Whether the model is a TransformerBridge (else a HookedTransformer)."""
        return self.backend == "bridge"

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks (cfg.n_layers)."""
        return int(self.cfg.n_layers)

    @property
    def d_model(self) -> int:
        """Residual-stream width, read from W_E."""
        return int(self.W_E.shape[1])

    @property
    def d_vocab(self) -> int:
        """Input vocabulary size: rows of W_E."""
        return int(self.W_E.shape[0])

    @property
    def d_vocab_out(self) -> int:
        """Output vocabulary size: columns of W_U (it may differ from d_vocab)."""
        return int(self.W_U.shape[1])

    @property
    def n_ctx(self) -> int:
        """Longest sequence the model accepts (cfg.n_ctx)."""
        return int(self.cfg.n_ctx)

    @property
    def is_rotary(self) -> bool:
        """Whether positions use a scheme other than the standard learned table (rotary, ALiBi...)."""
        return getattr(self.cfg, "positional_embedding_type", "standard") != "standard"

    @property
    def W_E(self) -> Tensor:
        """The model's token embedding matrix, [d_vocab, d_model]."""
        return self.model.W_E

    @property
    def W_pos(self) -> Tensor | None:
        """Learned position embeddings, or None for rotary/other schemes."""
        if self.is_rotary:
            return None
        table = getattr(self.model, "W_pos", None)  # the bridge's property raises AttributeError without one
        if isinstance(table, Tensor):
            return table
        # TransformerLens 3.9's bridge exposes no W_pos: read the wrapped embedding table.
        # Sinusoidal positions (XGLM) have no weights at all.
        weight = getattr(getattr(self.model, "_modules", {}).get("pos_embed"), "weight", None)
        return weight if isinstance(weight, Tensor) else None

    @property
    def W_U(self) -> Tensor:
        """The model's unembedding matrix, [d_model, d_vocab_out]."""
        return self.model.W_U

    @property
    def b_U(self) -> Tensor:
        """The model's unembedding bias, [d_vocab_out]."""
        return self.model.b_U

    @property
    def device(self) -> torch.device:
        """The device of the model's weights (that of W_E)."""
        return self.W_E.device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the blocks (the embedding may differ on quantized models)."""
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    @property
    def softcap(self) -> float | None:
        """The final logits' soft cap (cfg.output_logits_soft_cap, e.g. Gemma-2), or None when there is none."""
        cap = getattr(self.cfg, "output_logits_soft_cap", -1.0) or -1.0
        return float(cap) if cap > 0 else None

    @cached_property
    def embed_scale(self) -> float:
        """Factor between W_E[t] and the model's embedding output (√d_model for Gemma)."""
        tokens = torch.arange(min(8, self.d_vocab), device=self.device)[None]
        got: list[Tensor] = []
        with torch.no_grad(), attached(self.model, [(site_hook_name(Site.EMBED, None), lambda x, hook: got.append(x))]):
            self._forward(tokens, stop_at_layer=0)
        rows = self.W_E[tokens[0]].detach().float()
        scale = (got[0][0].float() * rows).sum() / (rows**2).sum()
        return float(scale)

    # ----- the lens ------------------------------------------------------------------
    def final_norm(self, resid: Float[Tensor, "*cells d_model"]) -> Float[Tensor, "*cells d_model"]:
        """The model's final norm, with statistics recomputed on `resid` (identity without one: OpenAI GPT)."""
        norm = getattr(self.model, "_modules", {}).get("ln_final") if self.is_bridge else getattr(self.model, "ln_final", None)
        return resid if norm is None else norm(resid)

    def unembed(self, normed: Float[Tensor, "*cells d_model"]) -> Float[Tensor, "*cells d_vocab"]:
        """Unembedding (with bias), then the model's own output transform.

        A bridge's unembedding component is the bare head; the architecture adapter holds
        what the HF model applies after it (Gemma-style soft-capping, Cohere's logit scale,
        Granite's logit scaling), the same transform TransformerLens's `logit_readout`
        applies. HookedTransformer and older bridges declare only a soft-cap in the config.
        """
        logits = self.model.unembed(normed)
        transform = self._output_transform
        if transform is not None:
            return transform(logits)
        if self.is_bridge:
            return logits
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    @property
    def _output_transform(self) -> Callable[[Tensor], Tensor] | None:
        """The bridge adapter's output-logits transform, if the model's logits really pass through it.

        Measured once per model and head weights (`output_transform_applies`): TransformerLens
        3.9's Cohere adapter folds the logit scale into the head in compatibility mode and still
        reports it in its transform, which would apply it twice.
        """
        transform = getattr(getattr(self.model, "adapter", None), "apply_output_logits_transform", None)
        if not (self.is_bridge and callable(transform)):
            return None
        return transform if output_transform_applies(self, transform) else None

    @cached_property
    def _prediction_head(self) -> nn.Module | None:
        """The head run between the final norm and the unembedding (ModernBERT's), or None.

        It is ModernBERT's dense + activation + norm; heads split across bridge components in
        an order the bridge does not record are refused (`readout_refusal`).
        """
        head = getattr(self.model, "_modules", {}).get("prediction_head")
        return head if isinstance(head, nn.Module) and self.is_bridge else None

    @cached_property
    def readout_refusal(self) -> str:
        """Why the lens cannot decode this model's residual stream as the model does ("" if it can)."""
        modules = getattr(self.model, "_modules", {}) if self.is_bridge else {}
        mounted = [name for name in _SPLIT_READOUT_COMPONENTS if name in modules]
        if mounted:
            return (f"this model's readout runs {mounted} between the last block and the unembedding, "
                    "in pieces whose order and activation the bridge does not expose")
        return ""

    def check_lens_readout(self) -> None:
        """Raise UnsupportedModelError when the lens cannot decode as the model does."""
        if self.readout_refusal:
            raise UnsupportedModelError(f"The logit lens cannot read this model: {self.readout_refusal}. "
                                        "Attribution and ablation still work.")

    def lens_logits(self, resid: Float[Tensor, "*cells d_model"]) -> Float[Tensor, "*cells d_vocab"]:
        """Decode any residual stream as the model decodes its last one."""
        self.check_lens_readout()
        normed = self.final_norm(resid)
        if self._prediction_head is not None:
            normed = self._prediction_head(normed)
        return self.unembed(normed)

    def _embedding_hook_values(self, tokens: Tokens) -> Embeds:
        """Run the model up to its embedding hook and return what the hook sees."""
        got: list[Tensor] = []
        with torch.no_grad(), attached(self.model, [(site_hook_name(Site.EMBED, None), lambda x, hook: got.append(x))]):
            self._forward(tokens, stop_at_layer=0)
        return got[0].detach()

    @cached_property
    def embedding_kind(self) -> str:
        """How the embedding hook's value depends on the input, measured once on a probe.

        "linear" (W_E[t] times one scale: GPT-2, Llama, Gemma's √d_model), "per_token" (a
        fixed function of the token, e.g. Bloom's LayerNorm after the embedding) or
        "positional" (positions or token types are mixed in before the hook, as in BERT).
        """
        ids = torch.arange(3, device=self.device) * 7 % self.d_vocab
        tokens = torch.cat([ids, ids])[None]
        seen = self._embedding_hook_values(tokens)[0].float()
        scale = max(float(seen.abs().max()), 1e-12)
        linear = self.W_E[tokens[0]].detach().float() * self.embed_scale
        if float((seen - linear).abs().max()) <= 1e-4 * scale:
            return "linear"
        return "per_token" if float((seen[:3] - seen[3:]).abs().max()) <= 1e-4 * scale else "positional"

    def token_embedding_rows(self, tokens: Int[Tensor, " n"]) -> Float[Tensor, "n d_model"]:
        """Each token's embedding-hook value on its own (a table row), in the hook's space."""
        if self.embedding_kind == "linear":
            return self.W_E[tokens] * self.embed_scale
        if self.embedding_kind == "positional":
            raise UnsupportedModelError(
                "This model mixes positions (or token types) into its embedding before the embedding hook, so a "
                "token has no embedding of its own to decode against, rank or average (gradient and exact "
                "inversion, the mean baseline); attribution, ablation and the logit lens still work."
            )
        flat = tokens.reshape(-1, 1)
        if flat.shape[0] == 0:
            return self.W_E.new_zeros(0, self.d_model)
        parts = [self._embedding_hook_values(flat[i : i + 1024]) for i in range(0, flat.shape[0], 1024)]
        return torch.cat(parts)[:, 0]

    def embed(self, tokens: Int[Tensor, "*batch pos"]) -> Float[Tensor, "*batch pos d_model"]:  # one sequence or a batch
        """What the model's embedding hook sees for these token sequences.

        The scale, and any norm or positions the model applies before the hook, are included.
        """
        if self.embedding_kind == "linear":
            return self.W_E[tokens] * self.embed_scale
        if self.embedding_kind == "per_token" or tokens.ndim != 2:
            return self.token_embedding_rows(tokens.flatten()).reshape(*tokens.shape, self.d_model)
        return self._embedding_hook_values(tokens)

    # ----- tokenization --------------------------------------------------------------
    @property
    def tokenizer(self):
        """The model's tokenizer, or None when it has none."""
        return getattr(self.model, "tokenizer", None)

    @property
    def bos_token_id(self) -> int | None:
        """The tokenizer's BOS id (None without a tokenizer or a BOS token)."""
        tok = self.tokenizer
        return None if tok is None else tok.bos_token_id

    @property
    def pad_token_id(self) -> int:
        """The id prompts are padded with: the tokenizer's pad, else EOS, else BOS id, else 0."""
        tok = self.tokenizer
        for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
            value = None if tok is None else getattr(tok, attr, None)
            if value is not None:
                return int(value)
        return 0

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Each token id decoded on its own (or `<id>` without a tokenizer)."""
        if self.tokenizer is None:
            return [f"<{int(i)}>" for i in ids]
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids decoded into one string (space-separated `<id>` without a tokenizer)."""
        if self.tokenizer is None:
            return " ".join(f"<{int(i)}>" for i in ids)
        return self.tokenizer.decode([int(i) for i in ids])

    def token_id(self, token: "str | int") -> int:
        """One token id from an id or a string that encodes to exactly one token."""
        if isinstance(token, bool) or not isinstance(token, (int, str)):
            raise PromptError(f"A token is an integer id or a single-token string; got {type(token).__name__} {token!r}.")
        if isinstance(token, int):
            ids = [token]
        elif self.tokenizer is None:
            raise PromptError("The model has no tokenizer; give the token as an integer id.")
        else:
            ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1 or not 0 <= ids[0] < self.d_vocab:
            raise PromptError(f"{token!r} is not a single token id in [0, {self.d_vocab}); it encodes to {ids}.")
        return int(ids[0])

    def _encode(self, text: str, prepend_bos: bool) -> list[int]:
        if self.tokenizer is None:
            raise PromptError("The model has no tokenizer; pass token ids as a LongTensor instead of text.")
        if not text:
            raise PromptError(f"The prompt is empty (got {text!r}); give at least one character of text.")
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if prepend_bos and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def prompt(self, prompt, *, prepend_bos: bool = True) -> Prompt:
        """Tokenize a string, a list of strings or a token tensor into a right-padded batch."""
        if isinstance(prompt, Prompt):
            return prompt
        batched = True
        if isinstance(prompt, str):
            rows, batched = [self._encode(prompt, prepend_bos)], False
        elif isinstance(prompt, Tensor):
            if prompt.is_floating_point() or prompt.is_complex() or prompt.dtype == torch.bool:
                raise PromptError(f"Token tensors must hold integer ids; got dtype {prompt.dtype}.")
            if prompt.device.type == "meta":
                raise PromptError("Token tensors on the 'meta' device hold no ids; give them on 'cpu' or the model's device.")
            if prompt.ndim == 1:
                prompt, batched = prompt[None], False
            if prompt.ndim != 2 or prompt.numel() == 0:
                raise PromptError(f"Token tensors must be [pos] or [batch, pos] and non-empty; got shape {tuple(prompt.shape)}.")
            rows = prompt.tolist()
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
            rows = [self._encode(p, prepend_bos) for p in prompt]
        else:
            raise PromptError(
                f"A prompt must be a string, a non-empty list of strings or a LongTensor of ids; got {_describe(prompt)}."
            )
        lengths = [len(r) for r in rows]
        if max(lengths) > self.n_ctx:
            raise PromptError(f"The prompt has {max(lengths)} tokens but the model's context (n_ctx) is {self.n_ctx}.")
        flat = [i for r in rows for i in r]
        if min(flat) < 0 or max(flat) >= self.d_vocab:
            raise PromptError(f"Token ids must lie in [0, {self.d_vocab}); got ids from {min(flat)} to {max(flat)}.")
        width = max(lengths)
        tokens = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        for b, r in enumerate(rows):
            tokens[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        str_tokens = [self.token_strings(r) for r in rows]
        return Prompt(
            tokens=tokens.to(self.device),
            lengths=torch.tensor(lengths),
            str_tokens=str_tokens,
            batched=batched,
        )

    # ----- running -------------------------------------------------------------------
    def hook_name(self, site: Site, layer: int | None) -> str:
        """The hook name of `site` at `layer` (see `sites.site_hook_name`)."""
        return site_hook_name(site, layer)

    def check_layer(self, layer: object, *, what: str = "layer") -> int:
        """Normalise a possibly negative layer index, or raise naming the valid range."""
        n = self.n_layers
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise TargetError(f"{what}={layer!r} is not an integer layer index; this model has layers 0..{n - 1} (or -{n}..-1).")
        if not -n <= layer < n:
            raise TargetError(f"{what}={layer!r} is out of range; this model has layers 0..{n - 1} (or -{n}..-1).")
        return layer % n

    def _forward(self, tokens: Tokens, **kwargs) -> Tensor:
        return forward_tokens(self.model, tokens, **kwargs)

    def run(
        self,
        tokens: Tokens | None = None,
        *,
        embeds: Embeds | None = None,
        capture: Sequence[tuple[Site, int | None]] = (),
        hooks: Sequence[tuple[str, HookFn]] = (),
        need_logits: bool = False,
    ) -> Capture:
        """Run the model, stopping after the deepest block that `capture` needs.

        Args:
            tokens: [batch, pos] ids. May be omitted when `embeds` are given.
            embeds: [batch, pos, d_model] replacement for the embedding hook's output
                (W_E rows times `embed_scale`); positions are still added by the model.
                Gradients flow back to them.
            capture: (site, layer) pairs to return, not detached.
            hooks: extra (hook name, fn) pairs active during the run.
            need_logits: run to the end even if `capture` needs less.
        """
        return run_full(self, tokens, embeds=embeds, capture=capture, hooks=hooks, need_logits=need_logits)

    def run_padded(self, tokens: Tokens, *, attention_mask: Tensor, position_ids: Tensor,
                   capture: Sequence[tuple[Site, int | None]] = (), need_logits: bool = False) -> Capture:
        """Run a left-padded batch with its mask and positions (see execution.run_padded)."""
        return run_padded(self, tokens, attention_mask=attention_mask, position_ids=position_ids,
                          capture=capture, need_logits=need_logits)

    def ablation_context(self, hooks: Sequence[tuple[str, HookFn]]):
        """Hooks active for a whole block of user code (see ablation.ablated)."""
        return attached(self.model, hooks) if hooks else nullcontext([])


_OUTPUT_TRANSFORM: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, bool]]" = weakref.WeakKeyDictionary()


def output_transform_applies(adapter: ModelAdapter, transform: Callable[[Tensor], Tensor]) -> bool:
    """Whether the model's logits are `transform(unembed(...))` rather than the bare head's output.

    Probed on four tokens (the final norm and head run on the last block's output, with and
    without the transform, against the model's own logits) once per model and per version
    of the head's weights, since compatibility mode may fold the transform into them. Where
    neither matches (or the probe cannot run) the transform is kept: the lens's self-check
    reports the disagreement.
    """
    model = adapter.model
    key = tuple((p.data_ptr(), p._version) for p in model.unembed.parameters())
    known = _OUTPUT_TRANSFORM.get(model)
    if known is not None and known[0] == key:
        return known[1]
    applies = True
    if not adapter.readout_refusal:
        from .preserve import preserved

        tokens = ((torch.arange(4) * 7 + 3) % adapter.d_vocab)[None].to(adapter.device)
        got: list[Tensor] = []
        last = site_hook_name(Site.RESID_POST, adapter.n_layers - 1)
        try:
            with torch.no_grad(), preserved(model):
                with attached(model, [(last, lambda x, hook: got.append(x))]):
                    out = adapter._forward(tokens).float()
                normed = adapter.final_norm(got[-1])
                if adapter._prediction_head is not None:
                    normed = adapter._prediction_head(normed)
                head = model.unembed(normed)
                with_transform = float((transform(head).float() - out).abs().max())
                without = float((head.float() - out).abs().max())
            applies = not (without < with_transform and without <= 1e-4 * max(float(out.abs().max()), 1.0))
        except Exception:  # noqa: BLE001 - a model that cannot run the probe fails in the real call
            applies = True
    _OUTPUT_TRANSFORM[model] = (key, applies)
    return applies


def wire_bridge_internals(model: nn.Module) -> None:
    """Install the bridge's own lazily-wired capture hooks now (idempotent).

    A TransformerBridge block registers pre-hooks on its norms on its first forward. Wiring
    them up front keeps them out of the "hooks added by lens_inversion" bookkeeping, so
    restoring the user's hook set never removes the bridge's own machinery.
    """
    for block in getattr(model, "blocks", []):
        wire = getattr(block, "_maybe_wire_capture_hooks", None)
        if callable(wire):
            wire()


def adapter_for(model) -> ModelAdapter:
    """Wrap `model` (or return it if it already is an adapter)."""
    return model if isinstance(model, ModelAdapter) else ModelAdapter(model)


__all__ = [
    "Capture", "CapturePlan", "ModelAdapter", "Prompt", "adapter_for", "check_model", "unwrap_model", "wire_bridge_internals",
    "Callable",
]
