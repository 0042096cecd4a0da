"""From continuous inputs back to tokens: pseudoinverse or nearest-neighbour decoding.

Scores are [..., d_vocab]; tokens outside `allowed_tokens` get −inf (never a 0 factor,
which would still let a negative-scoring token win).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import OptionError
from ..hooks import ModelAdapter, adapter_for, preserves_model
from ..validation import check_bool, check_choice, check_int
from .candidates import allowed_ids

Decoding = Literal["pinv", "cosine", "l2"]
DECODINGS = ("pinv", "cosine", "l2")


@dataclass(frozen=True, kw_only=True)
class EmbeddingTable:
    """A model's token embedding in float32: rows W_E, the embedding scale, W_pos (or None).

    For a model that transforms each token's embedding before its embedding hook (Bloom's
    LayerNorm), the rows are the hook's values per token and the scale is 1.
    """

    W_E: Float[Tensor, "d_vocab d_model"]
    scale: float
    W_pos: Float[Tensor, "n_ctx d_model"] | None

    @classmethod
    def of(cls, model) -> "EmbeddingTable":
        """The float32 table of `model`, in the embedding hook's space when the model transforms embeddings."""
        adapter = adapter_for(model)
        W_pos = adapter.W_pos
        W_pos = None if W_pos is None else W_pos.detach().float().to(adapter.device)
        if adapter.embedding_kind != "linear":  # rows in the hook's own space (e.g. after a LayerNorm)
            ids = torch.arange(adapter.d_vocab, device=adapter.device)
            return cls(W_E=adapter.token_embedding_rows(ids).float(), scale=1.0, W_pos=W_pos)
        return cls(W_E=adapter.W_E.detach().float(), scale=adapter.embed_scale, W_pos=W_pos)

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """What the embedding hook outputs for these tokens (scale included, no positions)."""
        return self.W_E[tokens.to(self.W_E.device)] * self.scale

    def from_token_space(self, x: Float[Tensor, "batch pos vocab"], columns: Tensor | None = None) -> Tensor:
        """Compute x @ W_E times the scale (the direct method's input); `columns` restricts the rows used."""
        table = self.W_E if columns is None else self.W_E[columns]
        return (x @ table) * self.scale

    @property
    def pinv(self) -> Float[Tensor, "d_model d_vocab"]:
        """Pseudo-inverse of W_E, [d_model, d_vocab]: computed once in float64, cached as float32."""
        cached = self.__dict__.get("_pinv")
        if cached is None:
            cached = torch.linalg.pinv(self.W_E.double()).float()
            object.__setattr__(self, "_pinv", cached)
        return cached


def allowed_mask(adapter: ModelAdapter, allowed_tokens, d_vocab: int | None = None) -> Tensor | None:
    """Boolean [d_vocab] mask of the allowed tokens (None: all allowed); parsed by `allowed_ids`."""
    if allowed_tokens is None:
        return None
    d_vocab = d_vocab or adapter.d_vocab
    mask = torch.zeros(d_vocab, dtype=torch.bool, device=adapter.device)
    mask[allowed_ids(adapter, allowed_tokens, d_vocab=d_vocab)] = True
    return mask


def mask_scores(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Set the scores of disallowed tokens to −inf."""
    if mask is None:
        return scores
    return scores.masked_fill(~mask.to(scores.device), float("-inf"))


def embedding_scores(
    table: EmbeddingTable,
    embeds: Float[Tensor, "*batch pos d_model"],
    *,
    decoding: Decoding = "pinv",
    subtract_positions: bool = False,
) -> Float[Tensor, "*batch pos d_vocab"]:
    """Token scores of continuous embeddings (embedding-hook space, scale included).

    `subtract_positions=True` is for inputs that include learned position embeddings
    (a `resid_pre[0]`); they are removed before decoding (rotary models have none).
    """
    check_choice("decoding", decoding, DECODINGS)
    e = embeds.float().to(table.W_E.device)
    if subtract_positions and table.W_pos is not None:
        e = e - table.W_pos[: e.shape[-2]]
    e = e / table.scale
    if decoding == "pinv":
        return e @ table.pinv
    if decoding == "cosine":
        return torch.nn.functional.normalize(e, dim=-1) @ torch.nn.functional.normalize(table.W_E, dim=-1).T
    # l2: the negative squared distance, expanded (no [.., vocab, d_model] tensor).
    return 2 * e @ table.W_E.T - (table.W_E**2).sum(-1) - (e**2).sum(-1, keepdim=True)


def top_tokens(scores: Tensor, mask: Tensor | None, k: int) -> Int[Tensor, "*batch pos k"]:
    """The k best allowed tokens per position, best first."""
    scores = mask_scores(scores, mask)
    k = min(k, scores.shape[-1] if mask is None else int(mask.sum()))
    return scores.topk(k, dim=-1).indices


def _check_embeds(adapter, embeds, subtract_positions: bool) -> None:
    """A finite float tensor [..., pos, d_model] on a real device; pos within n_ctx to subtract positions."""
    if not isinstance(embeds, Tensor):
        raise OptionError(f"embeds must be a float tensor [..., pos, d_model={adapter.d_model}]; got {type(embeds).__name__}.")
    if not embeds.is_floating_point():
        raise OptionError(
            f"embeds must be a float tensor of embeddings; got dtype {embeds.dtype} (to decode token ids, "
            "use the tokenizer; to decode embeddings, give floats)."
        )
    if embeds.ndim < 2 or embeds.shape[-1] != adapter.d_model:
        raise OptionError(
            f"embeds has shape {tuple(embeds.shape)} but should be [..., pos, d_model={adapter.d_model}]."
        )
    if embeds.device.type == "meta":
        raise OptionError(f"embeds is on the 'meta' device and holds no values; give a real tensor (the model is on {adapter.device}).")
    bad = int((~torch.isfinite(embeds)).sum())
    if bad:
        raise OptionError(f"embeds contains NaN or inf values ({bad} of {embeds.numel()} entries); give finite embeddings.")
    if subtract_positions and embeds.shape[-2] > adapter.n_ctx:
        raise OptionError(
            f"subtract_positions=True needs at most n_ctx={adapter.n_ctx} positions (one learned position "
            f"embedding each); got embeds of shape {tuple(embeds.shape)} with {embeds.shape[-2]} positions. "
            "Give at most n_ctx positions or subtract_positions=False."
        )


@preserves_model
def decode_embeddings(
    model,
    embeds: Float[Tensor, "*batch pos d_model"],
    /,
    *,
    decoding: Decoding = "pinv",
    allowed_tokens: "Sequence[int | str] | Tensor | None" = None,
    top_k: int = 1,
    subtract_positions: bool = False,
) -> Int[Tensor, "*batch pos k"]:
    """Decode continuous embeddings to the top-k token ids per position.

    Args:
        model: the model whose W_E decodes.
        embeds: embedding-hook outputs (W_E rows times the embedding scale).
        decoding: `"pinv"` (Moore–Penrose pseudoinverse of W_E), `"cosine"` or `"l2"`
            (nearest row of W_E).
        allowed_tokens: restrict the result to these ids or single-token strings.
        top_k: how many tokens per position, best first.
        subtract_positions: remove learned position embeddings first (for `resid_pre[0]`).

    Returns:
        [..., pos, top_k] token ids.
    """
    adapter = adapter_for(model)
    check_choice("decoding", decoding, DECODINGS)
    check_int("top_k", top_k, low=1)
    check_bool("subtract_positions", subtract_positions)
    _check_embeds(adapter, embeds, subtract_positions)
    table = EmbeddingTable.of(adapter)
    scores = embedding_scores(table, embeds, decoding=decoding, subtract_positions=subtract_positions)
    return top_tokens(scores, allowed_mask(adapter, allowed_tokens), top_k)
