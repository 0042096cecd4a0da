"""The real-English evaluation pieces of evaluate.py: windows over long texts, the written paragraph."""

import functools

import pytest

import lens_inversion as li
from lens_inversion.hooks import adapter_for
from lens_inversion.models import evaluate
from lens_inversion.models.loader import EMBEDDED

pytestmark = pytest.mark.skipif(not EMBEDDED["tiny"].exists(), reason="the embedded model is not shipped in this install")


@functools.cache
def _tiny():
    return li.load_model("tiny", device="cpu")


def test_the_written_texts_are_ordinary_english_of_the_right_length():
    assert 70 <= len(evaluate.MODERN_PARAGRAPH.split()) <= 100
    assert evaluate.HARBOUR.startswith("When the evening came, the old man walked slowly down to the harbour")
    assert evaluate.HARBOUR.endswith("the sky was turning from blue to a deep red.")


def test_text_loss_equals_heldout_loss_on_texts_that_fit():
    texts = evaluate.heldout_texts(6)
    loss, count = evaluate.text_loss(_tiny(), texts)
    ref_loss, ref_count = evaluate.heldout_loss(_tiny(), texts)
    assert count == ref_count
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_text_loss_scores_every_token_of_a_text_longer_than_the_context():
    adapter = adapter_for(_tiny())
    text = " ".join([evaluate.MODERN_PARAGRAPH] * 3)
    n_ids = len(adapter.tokenizer.encode(text, add_special_tokens=False))
    assert n_ids > adapter.n_ctx  # several windows
    loss, count = evaluate.text_loss(_tiny(), text)
    assert count == n_ids and loss > 0


def test_real_text_losses_and_their_table():
    losses = evaluate.real_text_losses(_tiny())
    assert {"paragraph", "harbour"} <= set(losses)
    assert losses["harbour"] == pytest.approx(evaluate.text_loss(_tiny(), evaluate.HARBOUR)[0])
    assert set(losses) - {"paragraph", "harbour"} == set(evaluate.heldout_source_texts())
    report = evaluate.ModelReport(name="x", loss=1.0, n_tokens=1, continuations=dict.fromkeys(evaluate.PROMPTS, ""),
                                  kl_per_layer=[0.0], real_losses={"paragraph": 4.25})
    assert "| `x` | 4.250 |" in evaluate.markdown([report])
