"""Adapter numerics against independent computations on every fixture model."""

import pytest
import torch
from _tolerances import assert_close

import lens_inversion as li
from lens_inversion.hooks import Site, adapter_for

pytestmark = pytest.mark.backend_generic
PROMPT = "The sky is blue. The grass is"


def _cache(model, tokens, names):
    """Independent capture through TransformerLens's own run_with_cache."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return cache


def test_lens_of_last_resid_equals_logits(model):
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    last = f"blocks.{adapter.n_layers - 1}.hook_resid_post"
    cache = _cache(model, tokens, {last})
    with torch.no_grad():
        logits = model(tokens)
        lens = adapter.lens_logits(cache[last])
    assert_close(lens, logits, loose=10)


def test_run_capture_equals_run_with_cache(model):
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    sites = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
    names = {f"blocks.{layer}.hook_{s}" for layer in range(adapter.n_layers) for s in sites}
    cache = _cache(model, tokens, names)
    keys = [(site, layer) for layer in range(adapter.n_layers)
            for site in (Site.RESID_PRE, Site.RESID_MID, Site.RESID_POST, Site.ATTN_OUT, Site.MLP_OUT)]
    with torch.no_grad():
        got = adapter.run(tokens, capture=keys)
    for site, layer in keys:
        assert_close(got[(site, layer)], cache[f"blocks.{layer}.hook_{site.value}"])


def test_residual_identities(model):
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    with torch.no_grad():
        c = adapter.run(tokens, capture=[(s, 0) for s in (Site.RESID_PRE, Site.RESID_MID, Site.RESID_POST, Site.ATTN_OUT, Site.MLP_OUT)])
    assert_close(c[(Site.RESID_MID, 0)], c[(Site.RESID_PRE, 0)] + c[(Site.ATTN_OUT, 0)], loose=10)
    assert_close(c[(Site.RESID_POST, 0)], c[(Site.RESID_MID, 0)] + c[(Site.MLP_OUT, 0)], loose=10)


def test_embeddings_path_equals_tokens_path(model):
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    with torch.no_grad():
        from_tokens = adapter.run(tokens, need_logits=True, capture=[(Site.RESID_POST, 0)])
        from_embeds = adapter.run(embeds=adapter.embed(tokens), need_logits=True, capture=[(Site.RESID_POST, 0)])
    assert_close(from_embeds.logits, from_tokens.logits)
    assert_close(from_embeds[(Site.RESID_POST, 0)], from_tokens[(Site.RESID_POST, 0)])


def test_embed_matches_embed_hook(model):
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    cache = _cache(model, tokens, {"hook_embed"})
    assert_close(adapter.embed(tokens).detach(), cache["hook_embed"])


def test_stopping_early_matches_full_run(model):
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    with torch.no_grad():
        early = adapter.run(tokens, capture=[(Site.RESID_POST, 0)])
        full = adapter.run(tokens, capture=[(Site.RESID_POST, 0)], need_logits=True)
    assert early.logits is None and full.logits is not None
    assert_close(early[(Site.RESID_POST, 0)], full[(Site.RESID_POST, 0)])


def test_gradients_reach_embeddings(model):
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    embeds = adapter.embed(tokens).detach().clone().requires_grad_(True)
    with li.hooks.preserved(model):
        out = adapter.run(embeds=embeds, capture=[(Site.RESID_POST, 0)])[(Site.RESID_POST, 0)]
        out.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    # finite difference along a random direction
    direction = torch.randn_like(embeds)
    eps = 1e-3
    with torch.no_grad():
        plus = adapter.run(embeds=embeds + eps * direction, capture=[(Site.RESID_POST, 0)])[(Site.RESID_POST, 0)].sum()
        minus = adapter.run(embeds=embeds - eps * direction, capture=[(Site.RESID_POST, 0)])[(Site.RESID_POST, 0)].sum()
    numeric = (plus - minus) / (2 * eps)
    analytic = (embeds.grad * direction).sum()
    assert abs(float(numeric - analytic)) <= 2e-2 * max(1.0, abs(float(analytic)))


def test_sizes_and_weights(model):
    adapter = adapter_for(model)
    assert adapter.n_layers == 2 and adapter.d_model == 64
    assert adapter.W_U.shape == (64, adapter.d_vocab_out)
    assert (adapter.W_pos is None) == adapter.is_rotary
    assert adapter.embed_scale == pytest.approx(1.0, abs=1e-5)


def test_batch_prompt_is_right_padded(model):
    adapter = adapter_for(model)
    batch = adapter.prompt(["The sky", "The grass is green and"])
    assert batch.batch == 2 and batch.batched
    assert batch.lengths.tolist()[0] < batch.lengths.tolist()[1] == batch.pos
    # the short prompt's real positions give the same activations as alone
    alone = adapter.prompt("The sky")
    with torch.no_grad():
        both = adapter.run(batch.tokens, capture=[(Site.RESID_POST, 1)])[(Site.RESID_POST, 1)]
        single = adapter.run(alone.tokens, capture=[(Site.RESID_POST, 1)])[(Site.RESID_POST, 1)]
    n = alone.pos
    assert_close(both[0, :n], single[0], loose=10)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("", "empty"),
        ([], "must be a string"),
        (torch.zeros(1, 3), "integer ids"),
        (torch.tensor([[1, 2, 99999]]), r"\[0, "),
        ("word " * 100, "n_ctx"),
        (42, "must be a string"),
    ],
)
def test_bad_prompts_raise(gpt2, bad, match):
    with pytest.raises(li.PromptError, match=match):
        adapter_for(gpt2).prompt(bad)


def test_unsupported_model():
    with pytest.raises(li.UnsupportedModelError, match="TransformerLens model"):
        adapter_for(torch.nn.Linear(2, 2))


def test_layer_check(gpt2):
    adapter = adapter_for(gpt2)
    assert adapter.check_layer(-1) == 1
    with pytest.raises(li.TargetError, match=r"layers 0\.\.1"):
        adapter.check_layer(2)
