"""float16 and bfloat16 models give finite, float32 results that match independent
computations in the model's own dtype; the same seed gives bit-identical results.

Half-precision models are private copies of the fixtures (`build_fresh(...).to(dtype)`),
so the shared float32 fixtures are never converted.
"""

import functools
import operator

import pytest
import torch
from _tolerances import assert_close
from fixture_models import build, build_fresh

import lens_inversion as li
from lens_inversion.hooks import adapter_for

PROMPT = "The sky is blue. The cat sat"
T = "blocks.0.hook_resid_post"
Q = dict(progress=False)
HALF = [torch.float16, torch.bfloat16]
NAMES = ["gpt2-native", "llama-native"]
CASES = [pytest.param(n, d, id=f"{n}-{str(d)[6:]}") for n in NAMES for d in HALF]


@functools.cache
def half(name: str, dtype: torch.dtype):
    model = build_fresh(name).to(dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    return model


def _tokens(model, prompt=PROMPT):
    return adapter_for(model).prompt(prompt).tokens


def _logits(model, tokens, hooks=()):
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        return model(tokens, attention_mask=torch.ones_like(tokens))


@pytest.mark.parametrize("name, dtype", CASES)
def test_logit_lens_input_mode_is_float32_and_matches_the_output(name, dtype):
    model = half(name, dtype)
    lens = li.logit_lens(model, PROMPT, compare="input", rows="sublayers", **Q)
    for value in (lens.kl, lens.rank, lens.prob, lens.entropy):
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
    tokens = _tokens(model)
    logp = _logits(model, tokens)[0].float().log_softmax(-1)  # the model's own half logits, read in float32
    expected_prob = logp.gather(-1, tokens[0, :, None])[:, 0].exp()
    assert_close(lens.prob[-1], expected_prob, atol=1e-5, rtol=1e-4)
    assert torch.equal(lens.kl[0], torch.zeros_like(lens.kl[0]))  # the input row against itself
    assert_close(lens.entropy[-1], -(logp.exp() * logp).sum(-1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name, dtype", CASES)
def test_grad_x_input_equals_autograd_in_the_models_dtype(name, dtype):
    model = half(name, dtype)
    adapter = adapter_for(model)
    tokens = _tokens(model)
    token = 7
    result = li.attribute(model, PROMPT, answer=token, normalize="none", **Q)
    assert result.scores.dtype == torch.float32 and torch.isfinite(result.raw_scores).all()

    embeds = (model.W_E.detach()[tokens] * adapter.embed_scale).to(dtype).requires_grad_(True)
    logits = model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: embeds)])
    with logits:
        out = model(tokens, attention_mask=torch.ones_like(tokens))
    (grad,) = torch.autograd.grad(out[0, -1, token], embeds)
    expected = (grad * embeds.detach()).float().abs().sum(-1)[0]
    expected[0] = 0.0  # BOS is not attributed
    assert_close(result.raw_scores, expected, atol=1e-3, rtol=2e-2)


@pytest.mark.parametrize("name, dtype", CASES)
def test_occlusion_equals_a_naive_loop(name, dtype):
    model = half(name, dtype)
    tokens = _tokens(model, "The sky is blue.")
    token, pad = 7, adapter_for(model).pad_token_id
    result = li.attribute(model, tokens, method="occlusion", answer=token, normalize="none", reuse="recompute", **Q)
    clean = _logits(model, tokens)[0, -1, token].float()
    expected = torch.zeros(tokens.shape[1])
    for c in range(1, tokens.shape[1]):
        occluded = tokens.clone()
        occluded[0, c] = pad
        expected[c] = (_logits(model, occluded)[0, -1, token].float() - clean).abs()
    assert torch.isfinite(result.raw_scores).all()
    assert_close(result.raw_scores, expected, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("name, dtype", CASES)
def test_exact_inversion_recovers_the_prompt(name, dtype):
    model = half(name, dtype)
    for target in (T, "blocks.1.hook_resid_post"):
        res = li.invert(model, PROMPT, target=target, method="exact", seed=0, **Q)
        assert res.token_accuracy == 1.0, (target, res.text)
        assert torch.equal(res.tokens, _tokens(model))
        assert res.distance == 0.0 and torch.isfinite(res.shifted_distances).all() and res.shifted_distance > 0


@pytest.mark.parametrize("name, dtype", CASES)
def test_gradient_inversion_keeps_float32_variables_and_descends(name, dtype):
    model = half(name, dtype)
    res = li.invert(model, PROMPT, target=T, optimizer="adam", lr=0.05, steps=15, **Q)
    assert res.trace.embeddings.dtype == torch.float32 and res.trace.loss_history.dtype == torch.float32
    assert torch.isfinite(res.trace.loss_history).all() and torch.isfinite(res.trace.embeddings).all()
    assert res.trace.loss_history[-1] < 0.8 * res.trace.loss_history[0]
    assert next(model.parameters()).dtype == dtype


@pytest.mark.parametrize("name, dtype", CASES)
def test_ablation_sweep_equals_a_naive_loop(name, dtype):
    model = half(name, dtype)
    tokens = _tokens(model)
    sweep = li.ablation_sweep(model, PROMPT, target="resid_pre[:, 1:]", metric="kl", batch_size=2, **Q)
    assert sweep.values.dtype == torch.float32 and torch.isfinite(sweep.values).all()
    clean = _logits(model, tokens)[0, -1].float().log_softmax(-1)
    for i, layer in enumerate(sweep.layers):
        for j, p in enumerate(sweep.columns):

            def zero(x, hook, p=p):
                x = x.clone()
                x[:, p] = 0
                return x

            ablated = _logits(model, tokens, [(f"blocks.{layer}.hook_resid_pre", zero)])[0, -1].float().log_softmax(-1)
            expected = (clean.exp() * (clean - ablated)).sum()
            assert_close(sweep.values[i, j], expected, atol=2e-2, rtol=5e-2)
    assert (sweep.values > 0).any()


def test_embedded_model_in_bfloat16():
    model = li.load_model("tiny", device="cpu", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    lens = li.logit_lens(model, PROMPT, **Q)
    assert lens.kl.dtype == torch.float32 and torch.isfinite(lens.kl).all()
    assert torch.equal(lens.final_top1, _logits(model, lens.tokens[None])[0].argmax(-1))
    assert li.invert(model, PROMPT, target="resid_post.-1", method="exact", seed=0, **Q).token_accuracy == 1.0


# ----- determinism -------------------------------------------------------------------------


def _disturb_global_rng():
    torch.manual_seed(torch.randint(0, 2**31, ()).item() + 1)
    torch.rand(1000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_gradient_inversion_same_seed_same_bits(dtype):
    model = build("gpt2-native") if dtype == torch.float32 else half("gpt2-native", dtype)
    options = dict(target=T, steps=5, n_restarts=2, start="mixed", noise_weight=1.0, **Q)
    a = li.invert(model, PROMPT, seed=11, **options)
    _disturb_global_rng()
    b = li.invert(model, PROMPT, seed=11, **options)
    c = li.invert(model, PROMPT, seed=12, **options)
    for field in ("trace.loss_history", "trace.embeddings", "tokens", "trace.restart_distances"):
        assert torch.equal(operator.attrgetter(field)(a), operator.attrgetter(field)(b)), field
    assert a.shifted_distance == b.shifted_distance
    assert not torch.equal(a.trace.loss_history, c.trace.loss_history), "the seed has no effect"


def test_resample_sweep_same_seed_same_bits():
    model = build("llama-native")
    references = [
        "A cat sat on the mat by the door.",
        "The sea is deep and the sun is bright.",
        "In the morning the birds sing loud.",
        "She reads books about rivers and hills.",
    ]
    options = dict(ablation="resample", reference=references, target="resid_mid", batch_size=3, **Q)
    first = li.ablation_sweep(model, PROMPT, seed=5, **options)
    _disturb_global_rng()
    again = li.ablation_sweep(model, PROMPT, seed=5, **options)
    assert torch.equal(first.values, again.values)
    others = [li.ablation_sweep(model, PROMPT, seed=s, **options).values for s in (6, 7, 8)]
    assert any(not torch.equal(first.values, o) for o in others), "the seed has no effect"


def test_exact_inversion_same_seed_same_bits():
    model = build("gpt2-native")
    options = dict(target=f"{T}[:, :, :8]", method="exact", order="random", **Q)
    a = li.invert(model, PROMPT, seed=3, **options)
    _disturb_global_rng()
    b = li.invert(model, PROMPT, seed=3, **options)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.distances, b.distances)
    assert torch.equal(a.shifted_distances, b.shifted_distances)
    assert [(p.candidates_checked, p.margin) for p in a.trace.positions] == [(p.candidates_checked, p.margin) for p in b.trace.positions]
    assert a.token_accuracy == 1.0
