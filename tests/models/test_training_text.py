"""The lens-fitting scripts see the text the model was trained on, and refuse text that differs."""

import json
from pathlib import Path

import pytest

from lens_inversion.errors import OptionError
from lens_inversion.models import corpus, train, training_text
from lens_inversion.models.loader import ASSETS
from lens_inversion.models.mixture import MixedCorpus


@pytest.fixture
def fake_assets(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(training_text, "ASSETS", tmp_path)
    return tmp_path


def _write_model(folder: Path, *, kind: str | None, sha256: str = "0" * 64, n_train: int = 5) -> None:
    folder.mkdir()
    record = {"corpus": {"sha256": sha256}, "config": {"n_train_docs": n_train, "seed": 3, "corpus": "grammar"}}
    if kind:
        record["corpus"]["kind"] = kind
        record["config"]["corpus"] = kind
    (folder / "training.json").write_text(json.dumps(record))
    (folder / "heldout.txt").write_text("first held-out\n\nsecond held-out\n")


def test_a_grammar_model_gets_the_generated_documents_of_its_seed(fake_assets):
    _write_model(fake_assets / "m", kind=None, n_train=5)
    assert training_text.training_documents("m", cache=None) == list(corpus.documents(5, seed=3))
    assert not training_text.is_mixed("m")


def test_a_mixed_model_needs_the_fetched_sources(fake_assets):
    _write_model(fake_assets / "m", kind="mixed")
    with pytest.raises(OptionError, match="--cache DIR"):
        training_text.training_documents("m", cache=None)


def test_a_rebuilt_mixture_with_another_hash_is_refused(fake_assets, monkeypatch, tmp_path):
    _write_model(fake_assets / "m", kind="mixed", sha256="f" * 64)
    rebuilt = MixedCorpus(train=["a"], heldout=["b"], heldout_sources={"kjv": ["c"]})
    monkeypatch.setattr(train, "build_training_corpus", lambda cfg, cache: rebuilt)
    with pytest.raises(OptionError, match="differs from the one m was trained on"):
        training_text.training_documents("m", cache=tmp_path)
    _write_model(fake_assets / "n", kind="mixed", sha256=rebuilt.sha256)
    assert training_text.training_documents("n", cache=tmp_path) == ["a"]


def test_held_out_documents_are_the_generated_then_each_sources(fake_assets):
    _write_model(fake_assets / "m", kind="mixed")
    assert training_text.heldout_documents("m") == ["first held-out", "second held-out"]
    (fake_assets / "m" / "heldout_sources.json").write_text(json.dumps({"kjv": ["k1", "k2"], "stdlib": ["s1"]}))
    assert training_text.heldout_documents("m") == ["first held-out", "second held-out", "k1", "k2", "s1"]


@pytest.mark.skipif(not (ASSETS / "tiny" / "training.json").exists(), reason="the embedded model is not shipped")
def test_the_shipped_model_records_what_rebuilds_its_corpus():
    record = training_text.training_record("tiny")
    train.TrainConfig(**record["config"])  # every recorded field is a TrainConfig field
    assert len(record["corpus"]["sha256"]) == 64
