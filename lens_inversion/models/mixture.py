"""The mixed training corpus: the generated grammar plus the real-English sources, by byte shares.

The generated grammar (`corpus.py`) keeps its consistent facts in the stream, so the lens on
the trained model stays readable ("The sky is" → " blue"); the real sources (`sources.py`)
teach ordinary English. Shares are by bytes of training text: `generated_share` of the
whole is generated, and no real source is more than `source_cap` of the whole. A source over
its cap contributes a seeded sample of its documents, one under its cap all of them; the
total follows from the two rules (see `mixture_total`). Held-out documents are the
generated held-out set (a different seed, as before) and each source's hash-chosen 2 %.
"""

import hashlib
import random
from dataclasses import dataclass, field

from ..errors import OptionError
from .corpus import build_corpus, documents


def n_bytes(docs: list[str]) -> int:
    """UTF-8 bytes of `docs`, one separator each (as `Corpus.n_bytes` counts them)."""
    return sum(len(d.encode()) + 1 for d in docs)


@dataclass(frozen=True, kw_only=True)
class MixedCorpus:
    """Shuffled training documents of every part, and held-out documents per part."""

    train: list[str]
    heldout: list[str]  # the generated held-out set, as in `Corpus` (what heldout.txt ships)
    heldout_sources: dict[str, list[str]]
    parts: dict[str, dict] = field(default_factory=dict)  # per part: bytes, docs, share, ...

    @property
    def sha256(self) -> str:
        """SHA-256 of the whole corpus (training, held-out and per-source held-out documents), for training.json."""
        held = [d for name in sorted(self.heldout_sources) for d in [f"--- {name}", *self.heldout_sources[name]]]
        return hashlib.sha256("\n".join(self.train + ["---"] + self.heldout + held).encode()).hexdigest()

    @property
    def n_bytes(self) -> int:
        """UTF-8 bytes of every document in the corpus."""
        return n_bytes(self.train) + n_bytes(self.heldout) + sum(n_bytes(v) for v in self.heldout_sources.values())

    def record(self) -> dict:
        """What training.json records about the corpus."""
        return {"kind": "mixed", "sha256": self.sha256, "bytes": self.n_bytes, "train_docs": len(self.train),
                "train_bytes": n_bytes(self.train), "heldout_docs": len(self.heldout),
                "heldout_source_docs": {k: len(v) for k, v in self.heldout_sources.items()}, "parts": self.parts}

    def __repr__(self) -> str:
        shares = ", ".join(f"{k} {v['share']:.0%}" for k, v in self.parts.items())
        return f"MixedCorpus(train={len(self.train)} docs, {n_bytes(self.train) / 1e6:.1f} MB: {shares})"


def mixture_total(available: dict[str, int], *, generated_share: float, source_cap: float) -> float:
    """Total training bytes T with `generated_share`·T generated and each source ≤ `source_cap`·T.

    Solves (1 - g)·T = Σ min(B_s, c·T) for T: real text is used up to the caps, never
    repeated. With the sources sorted by size, the k smallest are used whole and the others
    are cut to c·T; the k that is consistent gives T. Raises OptionError when the caps cannot
    make up the real share (n·c < 1 - g).
    """
    g, c, n = generated_share, source_cap, len(available)
    if not 0 <= g < 1 or not 0 < c <= 1:
        raise OptionError(f"generated_share must be in [0, 1) and source_cap in (0, 1]; got {g}, {c}.")
    if n * c < (1 - g) * (1 - 1e-12) or not any(available.values()):
        raise OptionError(f"{n} real source(s) capped at source_cap={c} cannot make up the real share {1 - g:.2f} "
                          f"of the corpus; raise source_cap or generated_share.")
    sizes = sorted(available.values())
    for k in range(n, 0, -1):  # k smallest sources whole, the n - k largest at their cap
        room = 1 - g - c * (n - k)
        if room <= 0:
            continue
        total = sum(sizes[:k]) / room
        if sizes[k - 1] <= c * total * (1 + 1e-12) and (k == n or sizes[k] >= c * total):
            return total
    return sizes[0] / c  # every source at its cap: only when n·c = 1 - g exactly


def _sample(docs: list[str], budget: float, rng: random.Random) -> list[str]:
    """A seeded sample of `docs` of at most `budget` bytes (all of them when they fit)."""
    if n_bytes(docs) <= budget:
        return list(docs)
    picked, used = [], 0
    for doc in rng.sample(docs, len(docs)):
        size = len(doc.encode()) + 1
        if used + size <= budget:
            picked.append(doc)
            used += size
    return picked


def _generated(total_bytes: float, *, seed: int, n_heldout: int) -> tuple[list[str], list[str]]:
    """The first generated documents up to `total_bytes`, and the generated held-out set."""
    count, used = 0, 0
    for doc in documents(10**9, seed=seed):
        if used + len(doc.encode()) + 1 > total_bytes:
            break
        count, used = count + 1, used + len(doc.encode()) + 1
    grammar = build_corpus(n_train=count, n_heldout=n_heldout, seed=seed)
    return grammar.train, grammar.heldout


def build_mixture(real: dict[str, tuple[list[str], list[str]]], *, generated_share: float = 0.4,
                  source_cap: float = 0.25, seed: int = 0, n_heldout: int = 1_000) -> MixedCorpus:
    """Mix the generated grammar with the (train, held-out) documents of each real source.

    `real` is what `sources.load` returns (or small fixtures in the tests). The training list
    is shuffled with `seed`, so rows mix the parts; every choice follows from `seed`.
    """
    available = {name: n_bytes(train) for name, (train, _) in real.items()}
    total = mixture_total(available, generated_share=generated_share, source_cap=source_cap)
    chosen = {name: _sample(train, source_cap * total, random.Random(f"{seed}:{name}"))
              for name, (train, _) in sorted(real.items())}
    gen_train, gen_heldout = _generated(generated_share * total, seed=seed, n_heldout=n_heldout)
    parts_docs = {"generated": gen_train, **chosen}
    train_bytes = sum(n_bytes(d) for d in parts_docs.values())
    parts = {name: {"bytes": n_bytes(docs), "docs": len(docs), "share": round(n_bytes(docs) / train_bytes, 4),
                    "available_bytes": available.get(name, n_bytes(docs))}
             for name, docs in parts_docs.items()}
    train = [doc for docs in parts_docs.values() for doc in docs]
    random.Random(seed).shuffle(train)
    return MixedCorpus(train=train, heldout=gen_heldout, heldout_sources={n: h for n, (_, h) in sorted(real.items())},
                       parts=parts)
