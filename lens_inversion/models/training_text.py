"""The text an embedded model was trained on, rebuilt from its `training.json`, for fitting its lenses.

Lenses must see the distribution the model learnt: the generated grammar for a model trained
on it alone, the mixture (grammar + real English) for one trained with `--corpus mixed`. The
mixture is rebuilt from the fetched sources (`python -m lens_inversion.models.sources --fetch`)
and checked against the corpus hash recorded at training time, so a lens can never be fitted
on text that differs from the model's.
"""

import json
from pathlib import Path

from ..errors import OptionError
from .loader import ASSETS


def training_record(name: str) -> dict:
    """The `training.json` of the embedded model `name`."""
    return json.loads((ASSETS / name / "training.json").read_text())


def is_mixed(name: str) -> bool:
    """Whether `name` was trained on the mixture of grammar and real English."""
    return training_record(name)["corpus"].get("kind") == "mixed"


def training_documents(name: str, *, cache: Path | None) -> list[str]:
    """The training documents of `name`, in training order (the held-out ones are never included)."""
    from .corpus import documents
    from .train import TrainConfig, build_training_corpus

    record = training_record(name)
    config = record["config"]
    if not is_mixed(name):
        return list(documents(config["n_train_docs"], seed=config["seed"]))
    if cache is None:
        raise OptionError(f"{name} was trained on the mixed corpus: give --cache DIR with the fetched sources "
                          "(python -m lens_inversion.models.sources --fetch --cache DIR).")
    corpus = build_training_corpus(TrainConfig(**config), cache)
    if corpus.sha256 != record["corpus"]["sha256"]:
        raise OptionError(f"The rebuilt corpus ({corpus.sha256[:12]}…) differs from the one {name} was trained on "
                          f"({record['corpus']['sha256'][:12]}…); refetch the sources.")
    return corpus.train


def heldout_generated(name: str) -> list[str]:
    """The generated held-out documents shipped beside `name` (from a seed training never used)."""
    return [line for line in (ASSETS / name / "heldout.txt").read_text().splitlines() if line]


def heldout_by_source(name: str) -> dict[str, list[str]]:
    """The held-out documents of each real source shipped beside `name` (none for a grammar-only model)."""
    path = ASSETS / name / "heldout_sources.json"
    return json.loads(path.read_text()) if path.exists() else {}


def heldout_documents(name: str) -> list[str]:
    """Held-out documents shipped beside `name`: the generated ones, then each real source's."""
    return heldout_generated(name) + [doc for part in heldout_by_source(name).values() for doc in part]
