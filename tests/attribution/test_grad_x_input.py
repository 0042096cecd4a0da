"""Gradient × input against plain autograd on a float64 copy and against finite differences."""

import pytest
import torch
from _tolerances import assert_close
from attribution_refs import PROMPT, float64_copy, frozen, logits, tokens_of

from lens_inversion.attribution import attribute


def autograd_gxi(model, tokens, scalar):
    model = frozen(model)
    embeds = model.W_E.detach()[tokens].clone().requires_grad_(True)
    value = scalar(logits(model, tokens, embeds))
    (grad,) = torch.autograd.grad(value, embeds)
    return (grad * embeds).detach()[0]


@pytest.mark.parametrize("name", ["gpt2-native", "llama-native", "gpt2-hf", "llama-hf"])
def test_equals_independent_autograd(name):
    model = float64_copy(name)
    tokens = tokens_of(model)
    predicted = int(logits(model, tokens)[0, -1].argmax())
    product = autograd_gxi(model, tokens, lambda out: out[0, -1, predicted])
    for signed, expected in ((False, product.abs().sum(-1)), (True, product.sum(-1))):
        expected[0] = 0
        result = attribute(model, PROMPT, signed=signed, normalize="none", progress=False)
        assert result.raw_scores.dtype == torch.float64
        assert_close(result.raw_scores, expected)
        assert_close(result.scores, expected)  # normalize="none"
        normalised = attribute(model, PROMPT, signed=signed, progress=False)
        assert_close(normalised.scores, expected / expected.abs().max())
        assert normalised.normalize == "max_abs" and normalised.scores.abs().max() == 1


def test_signed_scores_match_finite_differences():
    """d/dε O(a with a_c scaled by 1 + ε) at ε = 0 equals Σ_d ∂O/∂a_{c,d} a_{c,d}."""
    model = float64_copy("gpt2-native")
    tokens = tokens_of(model)
    token = 268
    result = attribute(model, PROMPT, answer=token, signed=True, normalize="none", progress=False)
    base = model.W_E.detach()[tokens]
    h = 1e-5
    for c in range(1, tokens.shape[1]):
        up, down = base.clone(), base.clone()
        up[0, c] *= 1 + h
        down[0, c] *= 1 - h
        fd = (logits(model, tokens, up)[0, -1, token] - logits(model, tokens, down)[0, -1, token]) / (2 * h)
        assert_close(result.raw_scores[c], fd, rtol=1e-6, atol=1e-8)


def test_target_gradient_is_of_the_selection_sum():
    model = float64_copy("llama-native")
    tokens = tokens_of(model)
    name = "blocks.1.hook_mlp_out"
    frozen(model)
    embeds = model.W_E.detach()[tokens].clone().requires_grad_(True)
    with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: embeds)]):
        _, cache = model.run_with_cache(tokens, names_filter=name, attention_mask=torch.ones_like(tokens))
    # run_with_cache detaches; recompute through a hook that keeps the graph instead
    kept = {}
    with model.hooks(
        fwd_hooks=[("hook_embed", lambda x, hook: embeds), (name, lambda x, hook: kept.setdefault("a", x))]
    ):
        model(tokens, attention_mask=torch.ones_like(tokens))
    assert_close(kept["a"].detach(), cache[name])
    (grad,) = torch.autograd.grad(kept["a"][0, 2:5, 10:30].sum(), embeds)
    expected = (grad * embeds).detach()[0].abs().sum(-1)
    expected[0] = 0
    result = attribute(model, PROMPT, target=f"{name}[:, 2:5, 10:30]", normalize="none", progress=False)
    assert_close(result.raw_scores, expected)


def test_per_output_rows_are_teacher_forced_gradients():
    model = float64_copy("gpt2-native")
    tokens = tokens_of(model, "The cat sat on")
    n = tokens.shape[1]
    result = attribute(model, "The cat sat on", per_output=True, normalize="none", batch_size=2, progress=False)
    predicted = result.predicted_token_id
    for p in range(n):
        token = int(tokens[0, p + 1]) if p + 1 < n else predicted
        expected = autograd_gxi(model, tokens, lambda out, p=p, token=token: out[0, p, token]).abs().sum(-1)
        expected[0] = 0
        assert_close(result.raw_matrix[p], expected)
    assert_close(result.raw_scores, result.raw_matrix[-1])
