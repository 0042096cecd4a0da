"""A small fixed set of token types, read from each token's own string (its id decoded alone).

In this order, the first that applies:

- `"special"`: the tokenizer's special ids (BOS, EOS, pad, unk, ...);
- `"whitespace"`: empty, or only whitespace (spaces, newlines, tabs);
- `"number"`: digits only, after stripping surrounding whitespace (`" 42"`);
- `"word_start"`: holds a letter or digit and begins a word: it starts with whitespace
  (`" rabbit"`), is the prompt's first token, or follows a special token or a token
  whose last character is not a letter or digit (`"("` then `"the"`);
- `"word_continuation"`: holds a letter or digit and continues the previous token's word
  (`"don"` then `"'t"`, `" Pe"` then `"ter"`);
- `"punctuation"`: everything else: punctuation, symbols, and byte pieces that do not
  decode to a character alone (`"."`, `" ("`, the replacement character).
"""

from collections.abc import Sequence

TOKEN_TYPES = ("special", "whitespace", "number", "word_start", "word_continuation", "punctuation")


def _has_word_char(text: str) -> bool:
    return any(c.isalnum() for c in text)


def token_type(text: str, *, special: bool, previous: str | None, previous_special: bool) -> str:
    """The type of one token from its string and the previous token's (None at the start)."""
    if special:
        return "special"
    if not text or text.isspace():
        return "whitespace"
    if text.strip().isdigit():
        return "number"
    if not _has_word_char(text):
        return "punctuation"
    starts = text[0].isspace() or previous is None or previous_special or not previous or not previous[-1].isalnum()
    return "word_start" if starts else "word_continuation"


def token_types(adapter, ids: Sequence[int]) -> list[int]:
    """The index in TOKEN_TYPES of each token of a prompt."""
    ids = [int(i) for i in ids]
    texts = adapter.token_strings(ids)
    specials = set(getattr(adapter.tokenizer, "all_special_ids", None) or [])
    out = []
    for i, (text, token) in enumerate(zip(texts, ids, strict=True)):
        previous = texts[i - 1] if i else None
        kind = token_type(text, special=token in specials, previous=previous,
                          previous_special=bool(i) and ids[i - 1] in specials)
        out.append(TOKEN_TYPES.index(kind))
    return out


__all__ = ["TOKEN_TYPES", "token_type", "token_types"]
