"""The shipped embedded models: files, tokenizer, quality against the untrained twin, bridge = HF."""

import functools
import math

import pytest
import torch
from _tolerances import assert_close

import lens_inversion as li
from lens_inversion.models import evaluate
from lens_inversion.models.loader import EMBEDDED

SHIPPED = [name for name, path in EMBEDDED.items() if path.exists()]
TEXTS = evaluate.heldout_texts(24) if "tiny" in SHIPPED else []

pytestmark = pytest.mark.skipif("tiny" not in SHIPPED, reason="the embedded model is not shipped in this install")


@functools.cache
def _bridge(name):
    return li.load_model(name, device="cpu")


@functools.cache
def _hf(name):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(EMBEDDED[name])).eval()  # local directory  # offline-ok


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(EMBEDDED["tiny"]))  # local directory  # offline-ok


def _hf_loss(model, texts, *, window: int | None = None):
    """Mean next-token NLL over BOS-prefixed texts, one text at a time (no padding at all).

    With `window`, a text is read in pieces of `window` tokens, each after its own BOS.
    """
    tok = _tokenizer()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False)
            step = window or len(ids)
            for start in range(0, len(ids), step):
                row = torch.tensor([[tok.bos_token_id, *ids[start : start + step]]])
                logp = model(row).logits[0, :-1].log_softmax(-1)
                total -= float(logp.gather(-1, row[0, 1:, None]).sum())
                count += row.shape[1] - 1
    return total / count


def test_required_models_are_shipped_and_small():
    assert {"tiny", "tiny-untrained"} <= set(SHIPPED)
    total = 0
    for name in SHIPPED:
        files = {p.name: p.stat().st_size for p in EMBEDDED[name].iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files), name
        total += sum(files.values())
    assert total <= 25 * 10**6  # issue 17's budget for the three models together


def test_all_shipped_models_share_one_tokenizer():
    ref = (EMBEDDED["tiny"] / "tokenizer.json").read_text()
    for name in SHIPPED:
        assert (EMBEDDED[name] / "tokenizer.json").read_text() == ref, name


def test_tokenizer_round_trips_text():
    tok = _tokenizer()
    samples = [*TEXTS[:20], "The sky is blue.", "  Two spaces,\ttabs\nand new lines.", "Zoë's café costs 3€ — naïve?",
               "Ünïcödé 漢字 🙂", "<|endoftext|> is special"]
    for text in samples:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.bos_token == tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id not in (tok.bos_token_id, None)
    assert tok.convert_tokens_to_ids("<|endoftext|>") == tok.bos_token_id


TRAINED = [n for n in ("tiny", "tiny-llama") if n in SHIPPED]


@pytest.mark.parametrize("name", TRAINED)
def test_heldout_loss_trained_far_below_untrained(name):
    trained = _hf_loss(_hf(name), TEXTS)
    untrained = _hf_loss(_hf("tiny-untrained"), TEXTS)  # same tokenizer and text
    vocab = len(_tokenizer())
    assert untrained > math.log(vocab) - 0.5  # an untrained model is about uniform
    assert trained < untrained / 2
    assert trained < 1.2


REAL_TEXTS = {"paragraph": [evaluate.MODERN_PARAGRAPH], "harbour": [evaluate.HARBOUR],
              **(evaluate.heldout_source_texts(32) if "tiny" in SHIPPED else {})}


@pytest.mark.parametrize("texts", REAL_TEXTS, ids=str)
@pytest.mark.parametrize("name", TRAINED)
def test_trained_models_read_real_english_far_better_than_untrained(name, texts):
    """Issue 17's bar: on held-out real English, 2 nats/token below the untrained twin and under 5.5."""
    assert set(REAL_TEXTS) >= {"paragraph", "harbour", "shakespeare", "wordnet", "kjv", "stdlib"}
    window = _hf(name).config.max_position_embeddings - 1
    trained = _hf_loss(_hf(name), REAL_TEXTS[texts], window=window)
    untrained = _hf_loss(_hf("tiny-untrained"), REAL_TEXTS[texts], window=window)
    assert trained <= untrained - 2.0
    assert trained < 5.5


@pytest.mark.parametrize("name", SHIPPED)
def test_bridge_logits_equal_hf_logits(name):
    bridge = _bridge(name)
    hf = _hf(name)
    ids = li.ModelAdapter(bridge).prompt(TEXTS[:3]).tokens
    with torch.no_grad():
        expected = hf(ids).logits
        actual = bridge(ids, attention_mask=torch.ones_like(ids))
    assert_close(actual, expected, loose=10)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "tiny-untrained"])
def test_evaluate_loss_matches_independent_hf_loss(name):
    bridge = _bridge(name)
    loss, n_tokens = evaluate.heldout_loss(bridge, TEXTS[:8], batch_size=5)
    assert_close(loss, _hf_loss(_hf(name), TEXTS[:8]), rtol=1e-4, atol=1e-4)
    tok = _tokenizer()
    assert n_tokens == sum(len(tok.encode(t, add_special_tokens=False)) for t in TEXTS[:8])


@pytest.mark.parametrize("name", TRAINED)
def test_logit_lens_kl_is_zero_at_the_last_layer_and_falls_with_depth(name):
    bridge = _bridge(name)
    kl = evaluate.lens_kl_per_layer(bridge, TEXTS[:8])
    assert len(kl) == li.ModelAdapter(bridge).n_layers
    assert abs(kl[-1]) < 1e-4
    assert all(a > b for a, b in zip(kl, kl[1:], strict=False))


@pytest.mark.parametrize("name", TRAINED)
def test_trained_model_knows_the_facts_of_its_corpus(name):
    from lens_inversion.models.corpus import CAPITALS, COLOURS

    bridge = _bridge(name)
    for thing in ("sky", "grass", "snow"):
        assert evaluate.greedy(bridge, f"The {thing} is", n_tokens=1).strip() == COLOURS[thing]
    for country in ("France", "Japan"):
        assert evaluate.greedy(bridge, f"The capital of {country} is", n_tokens=1).strip() == CAPITALS[country]


@pytest.mark.skipif("tiny-llama" not in SHIPPED, reason="tiny-llama not shipped")
def test_trained_llama_twin_runs_the_lens_and_exact_inversion():
    bridge = _bridge("tiny-llama")
    prompt = "The sky is blue. The grass is"
    lens = li.logit_lens(bridge, prompt, progress=False)
    ids = li.ModelAdapter(bridge).prompt(prompt).tokens
    with torch.no_grad():
        logits = bridge(ids)[0].float()
    expected_top = logits.argmax(-1)
    assert torch.equal(lens.top_tokens[-1, :, 0], expected_top)  # output row is the model's own output
    assert float(lens.kl[-1].abs().max()) < 1e-4
    res = li.invert(bridge, prompt, target="blocks.3.hook_resid_post", method="exact", progress=False)
    assert torch.equal(res.tokens, ids) and res.text == prompt
