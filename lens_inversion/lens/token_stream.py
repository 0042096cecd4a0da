"""Stream a text corpus into fixed-length token chunks, without holding the corpus in memory.

A corpus is any of:

- an iterable of strings (a list, a generator): one document per string;
- a path (`str` or `pathlib.Path`) or a list/tuple of `pathlib.Path`s to `.txt` files, where
  documents are separated by blank lines (a file without blank lines is one document), or to
  `.jsonl` files with one JSON object per line holding the text under `text_key`;
- a Hugging Face `datasets.Dataset` or `IterableDataset` with a `text_key` column (the
  `datasets` package is only touched when one is given).

A list of `str` is always texts, never paths: give files as `pathlib.Path` objects.

Documents are tokenized one at a time with the model's tokenizer and joined as
`EOS doc EOS doc ...` (the stream starts with EOS, as tuned-lens's `chunk_and_tokenize`
does), then cut into chunks of exactly `seq_len` tokens. The same corpus and options give
the same chunks, in the same order, on every run.
"""

import hashlib
import json
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from ..errors import OptionError, PromptError
from ..validation import check_int, check_seed, check_text

Chunk = Int[Tensor, " seq_len"]
_SOURCE_HELP = (
    "give an iterable of strings, a path or a list of pathlib.Path to .txt / .jsonl files, "
    "or a datasets.Dataset / IterableDataset"
)


def _is_hf_dataset(corpus: object) -> bool:
    """Whether `corpus` is a `datasets` (Iterable)Dataset, checked without importing `datasets`."""
    module = type(corpus).__module__ or ""
    return module.split(".")[0] == "datasets" and type(corpus).__name__ in ("Dataset", "IterableDataset")


def _paths(corpus: object) -> list[Path] | None:
    """The files a corpus names, or None when it is not given as paths."""
    if isinstance(corpus, (str, os.PathLike)):
        return [Path(corpus)]
    if isinstance(corpus, (list, tuple)) and corpus and all(isinstance(p, os.PathLike) for p in corpus):
        return [Path(p) for p in corpus]
    return None


def check_corpus(corpus: object, *, text_key: str = "text") -> None:
    """Raise OptionError, before any work, when `corpus` is not a corpus or names missing files."""
    check_text("text_key", text_key)
    paths = _paths(corpus)
    if paths is not None:
        for path in paths:
            if not path.is_file():
                what = "a directory" if path.is_dir() else "not an existing file"
                raise OptionError(f"Corpus file {str(path)!r} is {what}; {_SOURCE_HELP}.")
            if path.suffix not in (".txt", ".jsonl"):
                raise OptionError(f"Corpus file {str(path)!r} is neither .txt nor .jsonl; {_SOURCE_HELP}.")
        return
    if _is_hf_dataset(corpus):
        columns = getattr(corpus, "column_names", None)
        if columns is not None and text_key not in columns:
            raise OptionError(f"The dataset has no {text_key!r} column (it has {list(columns)}); set text_key.")
        return
    if isinstance(corpus, (bytes, dict)) or not isinstance(corpus, Iterable):
        raise OptionError(f"A corpus cannot be a {type(corpus).__name__}; {_SOURCE_HELP}.")


def _txt_documents(path: Path) -> Iterator[str]:
    lines: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line)
            elif lines:
                yield "".join(lines).rstrip("\n")
                lines = []
    if lines:
        yield "".join(lines).rstrip("\n")


def _jsonl_documents(path: Path, text_key: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise OptionError(f"{str(path)!r} line {number} is not JSON: {error.msg}.") from None
            text = row.get(text_key) if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise OptionError(f"{str(path)!r} line {number} has no string field {text_key!r}.")
            yield text


def documents(corpus, *, text_key: str = "text") -> Iterator[str]:
    """Yield the corpus's documents one by one (see the module docstring for what a corpus is)."""
    check_corpus(corpus, text_key=text_key)
    paths = _paths(corpus)
    if paths is not None:
        for path in paths:
            yield from (_txt_documents(path) if path.suffix == ".txt" else _jsonl_documents(path, text_key))
        return
    for number, item in enumerate(corpus):
        text = item.get(text_key) if _is_hf_dataset(corpus) else item
        if not isinstance(text, str):
            raise OptionError(f"Corpus document {number} is a {type(text).__name__}, not a string; {_SOURCE_HELP}.")
        yield text


def _separator(adapter) -> int:
    """The token that joins documents: EOS, else BOS (GPT-2-style tokenizers use one for both)."""
    tok = adapter.tokenizer
    if tok is None:
        raise PromptError("The model has no tokenizer, so it cannot read a text corpus; attach one to the model.")
    for attr in ("eos_token_id", "bos_token_id"):
        value = getattr(tok, attr, None)
        if value is not None:
            return int(value)
    raise PromptError("The model's tokenizer has neither an EOS nor a BOS token to separate documents with.")


def token_stream(adapter, corpus, *, text_key: str = "text") -> Iterator[int]:
    """Yield the corpus's tokens as `EOS doc EOS doc ...`, one document tokenized at a time."""
    sep = _separator(adapter)
    encode = adapter.tokenizer.encode
    for doc in documents(corpus, text_key=text_key):
        yield sep
        yield from encode(doc, add_special_tokens=False)


@dataclass
class ChunkCount:
    """What a `token_chunks` stream has read so far (filled in as it is consumed)."""

    tokens: int = 0  # tokens read from the corpus, the partial last chunk included
    chunks: int = 0  # chunks yielded
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)  # of the chunks yielded, in order

    def add(self, chunk: Tensor) -> None:
        """Count one yielded chunk and fold its ids into the digest."""
        self.chunks += 1
        self.digest.update(chunk.numpy().tobytes())


def token_chunks(
    adapter,
    corpus,
    *,
    seq_len: int,
    text_key: str = "text",
    drop_last: bool = True,
    shuffle_buffer: int = 0,
    seed: int = 0,
    count: ChunkCount | None = None,
) -> Iterator[Chunk]:
    """Yield [seq_len] int64 token chunks of the corpus, streaming and deterministically.

    Args:
        adapter: the model's ModelAdapter (its tokenizer encodes the documents).
        corpus: see the module docstring.
        seq_len: tokens per chunk.
        text_key: the text field of .jsonl lines and dataset rows.
        drop_last: drop the final chunk when it is shorter than `seq_len`.
        shuffle_buffer: shuffle chunks through a buffer of this many (0: corpus order),
            seeded by `seed`, so memory stays at `shuffle_buffer` chunks.
        seed: seed of the shuffle.
        count: a ChunkCount to update with what was read (tokens, chunks, digest).
    """
    check_int("seq_len", seq_len, low=1)
    check_int("shuffle_buffer", shuffle_buffer, low=0)
    check_seed(seed, allow_none=False)
    count = ChunkCount() if count is None else count
    chunks = _cut(token_stream(adapter, corpus, text_key=text_key), seq_len, drop_last, count)
    for chunk in _shuffled(chunks, shuffle_buffer, seed) if shuffle_buffer > 1 else chunks:
        count.add(chunk)
        yield chunk


def _cut(tokens: Iterator[int], seq_len: int, drop_last: bool, count: ChunkCount) -> Iterator[Chunk]:
    row: list[int] = []
    for token in tokens:
        row.append(token)
        count.tokens += 1
        if len(row) == seq_len:
            yield torch.tensor(row, dtype=torch.long)
            row = []
    if row and not drop_last:
        yield torch.tensor(row, dtype=torch.long)


def _shuffled(chunks: Iterator[Chunk], size: int, seed: int) -> Iterator[Chunk]:
    """A buffered shuffle: each incoming chunk swaps with a random buffered one, which is yielded."""
    rng = random.Random(seed)
    buffer: list[Chunk] = []
    for chunk in chunks:
        if len(buffer) < size:
            buffer.append(chunk)
            continue
        i = rng.randrange(size)
        buffer[i], chunk = chunk, buffer[i]
        yield chunk
    rng.shuffle(buffer)
    yield from buffer


__all__ = ["ChunkCount", "check_corpus", "documents", "token_chunks", "token_stream"]
