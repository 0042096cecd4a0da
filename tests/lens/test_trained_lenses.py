"""Shipped and fitted lenses: loading, fingerprints, the side-by-side comparison and its report section."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _tolerances import assert_close
from lens_refs import resid_rows

import lens_inversion as li
from lens_inversion.errors import ModelNotFoundError, OptionError, UnsupportedModelError
from lens_inversion.hooks.adapter import adapter_for
from lens_inversion.hooks.fingerprint import fingerprints_match, unembed_fingerprint, unembed_hash

PROMPT = "The sky is blue. Paris is the capital of France. The cat says meow and the dog says woof."
ASSETS = Path(li.__file__).parent / "models" / "assets"


def test_the_fingerprint_is_the_tuned_lens_package_hash(tiny):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(ASSETS / "tiny")
    import hashlib

    import numpy as np

    # tuned-lens 0.2 utils.tensor_hash, written out: sha256 of numpy's summarised text at one decimal.
    expected = hashlib.sha256(np.array_str(hf.lm_head.weight.detach().float().numpy(), precision=1).encode()).hexdigest()
    assert unembed_hash(adapter_for(tiny)) == expected
    folded = li.load_model("tiny", compatibility_mode=True)
    assert unembed_hash(adapter_for(folded)) != expected  # the folded basis is another model for a lens


def test_shipped_jacobian_lens_reads_tiny_as_transport_then_readout(tiny):
    lens = li.load_lens("tiny", kind="jacobian", model=tiny)
    assert lens.source_layers == [0, 1, 2] and lens.d_model == 128 and lens.n_prompts >= 40
    result = li.logit_lens(tiny, PROMPT, lens=lens, progress=False)
    # Independent: run_with_cache, J_l h by hand, HF-style final norm and unembedding.
    with torch.no_grad():
        resids, logits = resid_rows(tiny, result.tokens[None])
        final = F.log_softmax(logits.float(), -1)[0]
        for layer in lens.source_layers:
            moved = resids[layer + 1][0] @ lens.jacobians[layer].T
            lp = F.log_softmax(tiny.unembed(tiny.ln_final(moved[None]))[0].float(), -1)
            kl = F.kl_div(lp, final, reduction="none", log_target=True).sum(-1)
            assert_close(result.kl[layer + 1], kl, atol=2e-5, rtol=1e-4)


def test_a_lens_refuses_another_model(tmp_path):
    other = li.load_model("tiny-llama")
    shipped = li.load_lens("tiny", kind="jacobian")
    assert "fingerprint" in shipped.metadata and "unembed_hash" in shipped.metadata
    with pytest.raises(UnsupportedModelError, match="fitted for another model"):
        li.load_lens("tiny", kind="jacobian", model=other)
    # A lens recording only tuned-lens's hash (as fitted before the fingerprint) is checked by the hash.
    del shipped.metadata["fingerprint"]
    shipped.save(str(tmp_path / "hash_only.pt"))
    li.load_lens(str(tmp_path / "hash_only.pt"), kind="jacobian", model=li.load_model("tiny"))
    with pytest.raises(UnsupportedModelError, match="fitted for another model"):
        li.load_lens(str(tmp_path / "hash_only.pt"), kind="jacobian", model=other)


@pytest.mark.parametrize("kind", ["tuned", "jacobian"])
def test_missing_lenses_name_what_is_shipped(kind, tmp_path):
    with pytest.raises(ModelNotFoundError, match=rf"No {kind} lens at .*'tiny'"):
        li.load_lens(str(tmp_path / "nothing"), kind=kind)
    with pytest.raises(ModelNotFoundError, match="No .* lens at 'tiny-untrained'"):
        li.load_lens("tiny-untrained", kind=kind)


def test_bad_load_options(tmp_path):
    with pytest.raises(OptionError, match="kind='logit' is not valid; choose one of: 'tuned', 'jacobian'"):
        li.load_lens("tiny", kind="logit")
    with pytest.raises(OptionError, match="name_or_path must be"):
        li.load_lens(3, kind="jacobian")
    junk = tmp_path / "junk.pt"
    torch.save({"something": 1}, junk)
    with pytest.raises(OptionError, match="not a Jacobian lens artifact"):
        li.load_lens(str(junk), kind="jacobian")


def test_fit_jacobian_lens_wraps_transformer_lens_and_records_the_fingerprint(tiny, tmp_path):
    prompts = [PROMPT * 2, "one two three four five six seven eight nine ten. Monday Tuesday Wednesday Thursday Friday."]
    lens = li.fit_jacobian_lens(tiny, prompts, progress=False, dim_batch=32)
    from transformer_lens.tools.analysis import JacobianLens

    theirs = JacobianLens.fit(tiny, prompts, corpus="x", show_progress=False, dim_batch=32)
    for layer in theirs.source_layers:
        assert_close(lens.jacobians[layer], theirs.jacobians[layer], atol=1e-6, rtol=1e-5)
    assert lens.metadata["unembed_hash"] == unembed_hash(adapter_for(tiny))
    assert fingerprints_match(lens.metadata["fingerprint"], unembed_fingerprint(adapter_for(tiny)))
    lens.save(str(tmp_path / "j.pt"))
    again = li.load_lens(str(tmp_path / "j.pt"), kind="jacobian", model=tiny)
    assert again.metadata["unembed_hash"] == lens.metadata["unembed_hash"]
    with pytest.raises(OptionError, match="list of texts, not one string"):
        li.fit_jacobian_lens(tiny, "one prompt")
    with pytest.raises(OptionError, match="max_seq_len must be an integer >= 18"):
        li.fit_jacobian_lens(tiny, prompts, max_seq_len=4)
    with pytest.raises(UnsupportedModelError, match="compatibility mode"):
        li.fit_jacobian_lens(li.load_model("tiny", compatibility_mode=True), prompts, progress=False)


def test_compare_lenses_holds_each_lens_result_and_its_mean(tiny):
    jacobian = li.load_lens("tiny", kind="jacobian")
    comparison = li.compare_lenses(tiny, PROMPT, lenses=[jacobian])
    assert comparison.lenses == ["logit", "jacobian"]
    for i, kind in enumerate(comparison.lenses):
        alone = li.logit_lens(tiny, PROMPT, lens="logit" if kind == "logit" else jacobian, progress=False)
        assert_close(comparison.kl[i], alone.kl.mean(-1), atol=1e-6, rtol=1e-5)
    fig = comparison.plot()
    assert [t.name for t in fig.data] == ["Logit lens", "Jacobian lens"]
    assert list(fig.data[1].x) == comparison.row_labels[:-1]
    assert list(fig.data[1].marker.symbol) == ["circle-open", "circle", "circle", "circle"]
    with pytest.raises(OptionError, match="two logit lenses"):
        li.compare_lenses(tiny, PROMPT, lenses=["logit"])
    with pytest.raises(OptionError, match="list of lenses"):
        li.compare_lenses(tiny, PROMPT, lenses=jacobian)


def test_shipped_lenses_are_found_for_embedded_models_only(tiny, gpt2):
    kinds = sorted(type(lens).__name__ for lens in li.lens.trained.shipped_lenses(tiny))
    assert "JacobianLens" in kinds
    assert li.lens.trained.shipped_lenses(gpt2) == []
    # Folded weights: another fingerprint for the tuned lens, another basis for the Jacobian lens.
    assert li.lens.trained.shipped_lenses(li.load_model("tiny", compatibility_mode=True)) == []


def test_fit_jacobian_lens_old_corpus_spelling_warns_and_is_checked_as_corpus_name(tiny):
    with pytest.warns(DeprecationWarning, match="'corpus' is renamed 'corpus_name'"):
        with pytest.raises(li.OptionError, match="corpus_name"):
            li.fit_jacobian_lens(tiny, ["x " * 40], corpus=3, progress=False)
