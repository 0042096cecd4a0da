"""The lens reads every layer through the model's own output transform, not only its head.

Soft-capping (Gemma-2), a logit scale (Cohere) and logit scaling (Granite) act after the
unembedding. Random weights hide them (logits < 1), so the head is scaled ×60 here. The
independent reference is Hugging Face's own forward: the lens's reading of the last
residual must equal its log-probabilities at every position.
"""

import functools
import tempfile

import pytest
import torch
from fixture_models import tokenizer

import lens_inversion as li
from lens_inversion.hooks import adapter_for

transformers = pytest.importorskip("transformers")
bridge = pytest.importorskip("transformer_lens.model_bridge")

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, tie_word_embeddings=False)
ARCHITECTURES = {
    "gemma2-softcap": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=32, final_logit_softcapping=30.0)),
    "cohere-logit-scale": ("CohereConfig", "CohereForCausalLM", dict(logit_scale=0.25)),
    "granite-logits-scaling": ("GraniteConfig", "GraniteForCausalLM", dict(logits_scaling=8.0)),
}
PROMPT = "The sky is blue. The grass is green."


@functools.cache
def _models(name):
    config_name, model_name, extra = ARCHITECTURES[name]
    tok = tokenizer()
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(vocab_size=len(tok), **SMALL, **extra)
    hf = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():
        hf.lm_head.weight.mul_(60)  # logits far from 0, where the transform matters
    path = tempfile.mkdtemp(prefix=f"li-{name}-")
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return hf, bridge.TransformerBridge.boot_transformers(path, device="cpu").eval()


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_lens_row_equals_hugging_face_log_probs(name):
    hf, model = _models(name)
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    key = (li.Site.RESID_POST, adapter.n_layers - 1)
    with torch.no_grad():
        reference = hf(tokens).logits.log_softmax(-1)
        lens = adapter.lens_logits(adapter.run(tokens, capture=[key])[key]).log_softmax(-1)
        bare = model.unembed(model.ln_final(adapter.run(tokens, capture=[key])[key])).log_softmax(-1)
    assert (bare - reference).abs().max() > 0.5  # the transform matters at this scale
    torch.testing.assert_close(lens, reference, rtol=1e-4, atol=1e-4)


TRANSFORMS = {  # what each HF model applies after lm_head, written out by hand
    "gemma2-softcap": lambda x: torch.tanh(x / 30.0) * 30.0,
    "cohere-logit-scale": lambda x: x * 0.25,
    "granite-logits-scaling": lambda x: x / 8.0,
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_lens_row_matches_a_hand_built_readout(name):
    """Row `0` (block 0's residual) against HF's hidden state → final norm → lm_head → transform."""
    hf, model = _models(name)
    result = li.logit_lens(model, PROMPT, progress=False)
    tokens = adapter_for(model).prompt(PROMPT).tokens
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
        final = out.logits.log_softmax(-1)
        row = TRANSFORMS[name](hf.lm_head(hf.model.norm(out.hidden_states[1]))).log_softmax(-1)
    kl = (final.exp() * (final - row)).sum(-1)[0]
    assert result.row_labels[1] == "0"
    torch.testing.assert_close(result.kl[1], kl, rtol=1e-3, atol=1e-4)
    assert any(c.name == "lens_row" and c.passed for c in result.checks)
