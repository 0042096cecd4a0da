"""Prompts for the per-prompt corpus jobs (attribution and ablation averages): one per document.

Each document of the corpus (`lens.token_stream.documents`, in corpus order) becomes one
prompt: its token ids with BOS in front when the tokenizer has one, cut to the first
`max_tokens` ids. Documents that give fewer than `MIN_TOKENS` ids (BOS included) are
skipped, as there is nothing before the explained position to score; `n_prompts` stops
the stream after that many prompts (None: every document). The same corpus and options
give the same prompts, in the same order, on every run and every process.
"""

import hashlib
from collections.abc import Iterator

import torch
from jaxtyping import Int
from torch import Tensor

from ..bos import first_content_position, with_bos
from ..errors import PromptError
from ..lens.token_stream import check_corpus, documents
from ..validation import check_int, check_text

MIN_TOKENS = 2  # BOS (or a first token) and one more: the smallest prompt with something to score


def check_prompt_options(adapter, corpus, *, n_prompts: int | None, max_tokens_per_prompt: int,
                         text_key: str) -> None:
    """Raise OptionError for a bad corpus or prompt option, before the model runs."""
    check_int("n_prompts", n_prompts, low=1, allow_none=True)
    check_int("max_tokens_per_prompt", max_tokens_per_prompt, low=MIN_TOKENS, high=adapter.n_ctx)
    check_text("text_key", text_key)
    check_corpus(corpus, text_key=text_key)
    if adapter.tokenizer is None:
        raise PromptError("The model has no tokenizer, so it cannot read a text corpus; attach one to the model.")


def corpus_prompts(adapter, corpus, *, n_prompts: int | None, max_tokens_per_prompt: int,
                   text_key: str = "text") -> Iterator[Int[Tensor, " pos"]]:
    """Yield one int64 [pos] prompt per document (see the module docstring)."""
    bos = adapter.bos_token_id
    made = 0
    for doc in documents(corpus, text_key=text_key):
        if n_prompts is not None and made >= n_prompts:
            return
        ids = with_bos(adapter.tokenizer.encode(doc, add_special_tokens=False), bos)
        ids = ids[:max_tokens_per_prompt]
        if len(ids) < MIN_TOKENS:
            continue
        made += 1
        yield torch.tensor(ids, dtype=torch.long)


def prompt_digest(prompt: Tensor) -> bytes:
    """A fingerprint of one prompt's ids (its length included, so a stream of them is unambiguous)."""
    h = hashlib.sha256(len(prompt).to_bytes(8, "little"))
    h.update(prompt.cpu().numpy().tobytes())
    return h.digest()


def prompt_size(prompt: Tensor) -> int:
    """Tokens in one prompt (what the progress bar and RunInfo.tokens count)."""
    return len(prompt)


def distances(n: int) -> Int[Tensor, " pos"]:
    """Each position's distance from the last (explained) one: n-1, ..., 1, 0."""
    return torch.arange(n - 1, -1, -1)


def scored_from(adapter, prompt: Tensor, *, include_bos: bool) -> int:
    """The first scored position: 1 when the prompt starts with BOS and BOS is left out, else 0."""
    return first_content_position(prompt, adapter.bos_token_id, include_bos=include_bos)


__all__ = ["MIN_TOKENS", "check_prompt_options", "corpus_prompts", "distances", "prompt_digest", "prompt_size",
           "scored_from"]
