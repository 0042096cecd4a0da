"""How many bytes of text each token id stands for: the denominator of bits per byte.

- Byte-level BPE (GPT-2 style, the embedded models): a token's string holds one character
  per byte, so its length is its byte count (exact).
- SentencePiece pieces: "▁" is one space byte, "<0xNN>" byte-fallback pieces one byte,
  other pieces their UTF-8 length (exact).
- Anything else: the UTF-8 length of the token decoded on its own ("decoded": exact for
  tokens that hold whole characters, approximate for tokens that split one).

Special tokens (BOS, EOS, pad...) stand for no text: 0 bytes.
"""

import json
import re

import torch
from torch import Tensor

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _decoder_type(tokenizer) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = [d.get("type") for d in decoder.get("decoders", [decoder])]
    if "ByteLevel" in kinds:
        return "byte-level"
    if "Metaspace" in kinds or any(d.get("type") == "Replace" and d.get("pattern", {}).get("String") == "▁"
                                   for d in decoder.get("decoders", [])):
        return "sentencepiece"
    return None


def _piece_bytes(piece: str, method: str) -> int:
    if method == "byte-level":
        return len(piece)
    if _BYTE_PIECE.match(piece):
        return 1
    return len(piece.replace("▁", " ").encode("utf-8"))


def token_byte_lengths(tokenizer, d_vocab: int) -> tuple[Tensor, str]:
    """[d_vocab] int64 bytes per token id, and how they were found ("byte-level", "sentencepiece", "decoded")."""
    method = _decoder_type(tokenizer) or "decoded"
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = torch.zeros(d_vocab, dtype=torch.int64)
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(d_vocab, len(tokenizer)))))
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            continue
        if method == "decoded":
            out[i] = len(tokenizer.decode([i]).encode("utf-8"))
        else:
            out[i] = _piece_bytes(piece, method)
    return out, method


__all__ = ["token_byte_lengths"]
