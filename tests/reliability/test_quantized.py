"""Models loaded in 8-bit with bitsandbytes (on CPU) and through accelerate's `device_map`.

Every analysis must run on them without assuming float32 weights: the logit lens, gradient
× input, occlusion and exact inversion are each checked against an independent
computation on the quantized model itself.
"""

import functools
import warnings

import pytest
import torch
from _tolerances import assert_close
from fixture_models import hf_dir
from references import grad_x_input_reference
from untouched import Snapshot

import lens_inversion as li
from lens_inversion.hooks import adapter_for

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install -e '.[quant]')")
pytest.importorskip("accelerate", reason="accelerate is not installed (pip install -e '.[quant]')")

PROMPT = "The sky is blue. The cat sat"
Q = dict(progress=False)
KINDS = ["gpt2", "llama"]  # GPT-2 has a fused QKV projection that must stay unquantized


@functools.cache
def load(kind: str, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return li.load_model(str(hf_dir(kind)), **options)


def eight_bit(kind):
    return load(kind, load_in_8bit=True, device_map="cpu")


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens, attention_mask=torch.ones_like(tokens))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
        yield


@pytest.mark.parametrize("kind", KINDS)
def test_the_model_is_really_quantized_and_close_to_float32(kind):
    model = eight_bit(kind)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(quantized) >= 4, "no layer was quantized"
    assert any(p.dtype == torch.int8 for p in model.parameters())
    assert model.W_E.dtype == torch.float32 and model.W_U.dtype == torch.float32  # embedding and head stay float
    tokens = adapter_for(model).prompt(PROMPT).tokens
    full = _logits(load(kind), tokens)
    q = _logits(model, tokens)
    assert torch.isfinite(q).all()
    assert (q - full).abs().max() < 0.05 * full.abs().max() + 0.05  # int8 error, not a different model


@pytest.mark.parametrize("kind", KINDS)
def test_logit_lens_on_8bit_equals_its_own_cache(kind):
    model = eight_bit(kind)
    snapshot = Snapshot(model)
    lens = li.logit_lens(model, PROMPT, **Q)
    snapshot.assert_unchanged()
    assert lens.kl.dtype == torch.float32 and torch.isfinite(lens.kl).all() and torch.isfinite(lens.rank).all()
    tokens = lens.tokens[None]
    logits, cache = model.run_with_cache(tokens, attention_mask=torch.ones_like(tokens))
    final = logits[0].float().log_softmax(-1)
    assert torch.equal(lens.final_top1, logits[0].argmax(-1))
    names = ["blocks.0.hook_resid_pre", *[f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers - 1)]]
    with torch.no_grad():
        for row, name in enumerate(names):
            layer = model.unembed(model.ln_final(cache[name]))[0].float().log_softmax(-1)
            assert_close(lens.kl[row], (final.exp() * (final - layer)).sum(-1), atol=1e-4, rtol=1e-3)
    assert torch.equal(lens.kl[-1], torch.zeros_like(lens.kl[-1]))


@pytest.mark.parametrize("kind", KINDS)
def test_attribution_on_8bit_equals_autograd_and_a_naive_loop(kind):
    model = eight_bit(kind)
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    token = 9
    snapshot = Snapshot(model)
    grad = li.attribute(model, PROMPT, answer=token, normalize="none", **Q)
    occ = li.attribute(model, PROMPT, method="occlusion", answer=token, normalize="none", reuse="recompute", **Q)
    snapshot.assert_unchanged()
    assert torch.isfinite(grad.raw_scores).all() and torch.isfinite(occ.raw_scores).all()

    expected = grad_x_input_reference(model, tokens, token, adapter.embed_scale)
    assert_close(grad.raw_scores, expected, atol=1e-3, rtol=1e-2)

    clean = _logits(model, tokens)[0, -1, token]
    naive = torch.zeros(tokens.shape[1])
    for c in range(1, tokens.shape[1]):
        occluded = tokens.clone()
        occluded[0, c] = adapter.pad_token_id
        naive[c] = (_logits(model, occluded)[0, -1, token] - clean).abs()
    assert_close(occ.raw_scores, naive, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_exact_inversion_on_8bit_recovers_the_prompt(kind):
    model = eight_bit(kind)
    snapshot = Snapshot(model)
    for target in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post[:, :, :16]"):
        res = li.invert(model, PROMPT, target=target, method="exact", seed=0, **Q)
        assert res.token_accuracy == 1.0, (target, res.text)
        assert torch.equal(res.tokens, adapter_for(model).prompt(PROMPT).tokens)
        assert res.distance == 0.0 < res.shifted_distance
    snapshot.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_device_map_load_matches_the_plain_load(kind, monkeypatch):
    import transformers

    calls = []
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs.get("device_map"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapped = li.load_model(str(hf_dir(kind)), device_map="cpu")
    assert calls == ["cpu"], "device_map did not reach Hugging Face / accelerate"
    plain = load(kind)
    assert all(p.device.type == "cpu" for p in mapped.parameters())
    tokens = adapter_for(plain).prompt(PROMPT).tokens
    assert_close(_logits(mapped, tokens), _logits(plain, tokens), atol=1e-5, rtol=1e-5)
    assert_close(li.logit_lens(mapped, PROMPT, **Q).kl, li.logit_lens(plain, PROMPT, **Q).kl, atol=1e-5, rtol=1e-4)
    assert li.invert(mapped, PROMPT, target="resid_post.1", method="exact", seed=0, **Q).token_accuracy == 1.0
