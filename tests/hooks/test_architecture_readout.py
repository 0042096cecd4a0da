"""Embeddings, readouts, caches and batch widening on architectures unlike GPT-2 and Llama.

The references are the matrix's independent checks (tests/architectures/checks.py: plain
model calls, TransformerLens hooks, autograd, naive loops), run here in the ordinary suite
on one representative of each class: Bloom (a LayerNorm after the embedding, ALiBi),
ModernBERT's decoder (a prediction head between the final norm and the unembedding), BERT
(positions mixed into the embedding, a split readout head) and Mamba (a recurrent state).
"""

import sys
from pathlib import Path

import pytest

import lens_inversion as li
from lens_inversion.hooks import adapter_for
from lens_inversion.hooks.kv_cache import backend_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "architectures"))
import checks  # noqa: E402
from catalog import model_dir  # noqa: E402


def _load(arch: str):
    model = li.load_model(str(model_dir(arch)))
    return model, checks.prompt_tokens(model)


@pytest.mark.parametrize("capability", ["grad_x_input", "occlusion", "exact_first", "exact_last", "sweep", "inv_embedding"])
def test_bloom_layernormed_embedding_and_alibi(capability):
    model, tokens = _load("BloomForCausalLM")
    assert adapter_for(model).embedding_kind == "per_token"
    getattr(checks, f"check_{capability}")(model, tokens)  # raises Wrong on a mismatch


def test_modernbert_lens_applies_its_prediction_head():
    model, tokens = _load("ModernBertDecoderForCausalLM")
    checks.check_lens_final(model, tokens)
    checks.check_grad_x_input(model, tokens)


def test_bert_refuses_what_needs_token_tables_and_the_report_shows_the_rest(tmp_path):
    model, tokens = _load("BertLMHeadModel")
    assert adapter_for(model).embedding_kind == "positional"
    checks.check_grad_x_input(model, tokens)  # whole prompts still work, exactly
    with pytest.raises(li.UnsupportedModelError, match=r"readout runs \['mlm_head'\]"):
        li.logit_lens(model, tokens, progress=False)
    with pytest.raises(li.UnsupportedModelError, match="mixes positions"):
        li.invert(model, tokens, target="blocks.0.hook_resid_post", method="exact", progress=False)
    result = li.report(model, "The sky is blue.", path=tmp_path / "r.html", inversion_layers=[0], gradient_steps=1,
                       progress=False)
    page = (tmp_path / "r.html").read_text()
    assert result.lens_final is None and "mlm_head" in result.lens_refusal and result.inversions == ()
    assert page.count("Not shown") == 2 and "Attribution of the next-token prediction" in page


def test_recurrent_state_models_recompute_and_stay_exact():
    model, tokens = _load("MambaForCausalLM")
    assert "recurrent state" in backend_for(adapter_for(model)).reason
    checks.check_exact_last(model, tokens)
    checks.check_occlusion(model, tokens)


@pytest.mark.parametrize(("arch", "reason"), [("HrmTextForCausalLM", "no `blocks` stack"),
                                              ("DeepseekV4ForCausalLM", "no single residual stream")])
def test_models_without_one_residual_stream_per_block_are_refused(arch, reason):
    model, tokens = _load(arch)
    with pytest.raises(li.UnsupportedModelError, match=reason):
        li.attribute(model, tokens, progress=False)


def test_openai_gpt_stays_causal_and_its_lens_has_no_final_norm():
    """Its bridge loses causal masking under an explicit mask; earlier positions must not see the last token."""
    import torch

    from lens_inversion.hooks.execution import mask_breaks_causality

    model, tokens = _load("OpenAIGPTLMHeadModel")
    assert mask_breaks_causality(model)
    adapter = adapter_for(model)
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % adapter.d_vocab
    with torch.no_grad():
        a, b = (adapter.run(t, need_logits=True).logits for t in (tokens, changed))
    assert torch.equal(a[0, :-1], b[0, :-1])
    checks.check_lens_final(model, tokens)
    checks.check_exact_last(model, tokens)
