"""Ablation specs against identities computed independently from the blocks' own modules."""

import pytest
import torch
from _tolerances import assert_close
from untouched import Snapshot

import lens_inversion as li
from lens_inversion.ablation import (
    Ablate,
    BypassLayerNorm,
    FreezeLayerNorm,
    RemoveResidual,
    TruncateWidth,
    ZeroComponent,
    ablated,
)
from lens_inversion.hooks import adapter_for

pytestmark = pytest.mark.backend_generic

PROMPT = "The sky is blue. The cat sat"


def _cached(model, tokens, names):
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return logits, {n: cache[n] for n in names}


def _tokens(model, prompt=PROMPT):
    return adapter_for(model).prompt(prompt).tokens


def test_remove_attention_residual(model):
    tokens = _tokens(model)
    for layer in range(model.cfg.n_layers):
        names = [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_resid_post"]
        with ablated(model, RemoveResidual(layer, around="attn")):
            _, cache = _cached(model, tokens, names)
        attn_out, post = cache[names[0]], cache[names[1]]
        block = model.blocks[layer]
        with torch.no_grad():
            expected = attn_out + block.mlp(block.ln2(attn_out))
        assert_close(post, expected, loose=10)


def test_remove_mlp_residual(model):
    tokens = _tokens(model)
    layer = model.cfg.n_layers - 1
    names = [f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_resid_post"]
    with ablated(model, RemoveResidual(layer, around="mlp")):
        _, cache = _cached(model, tokens, names)
    block = model.blocks[layer]
    with torch.no_grad():
        expected = block.mlp(block.ln2(cache[names[0]]))
    assert_close(cache[names[1]], expected, loose=10)


def test_bypass_final_norm_gives_plain_unembedding(model):
    tokens = _tokens(model)
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with ablated(model, BypassLayerNorm(which="final")):
        logits, cache = _cached(model, tokens, [name])
    adapter = adapter_for(model)
    assert_close(logits, cache[name] @ adapter.W_U + adapter.b_U, loose=10)


def test_zero_components(model):
    tokens = _tokens(model)
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"]
    with ablated(model, ZeroComponent(0, "attn")):
        _, cache = _cached(model, tokens, names)
    assert_close(cache[names[1]], cache[names[0]])
    with ablated(model, ZeroComponent(0, "mlp")):
        _, cache = _cached(model, tokens, names)
    assert_close(cache[names[2]], cache[names[1]])


@pytest.mark.parametrize("site", ["resid_pre", "resid_mid", "attn_out"])
def test_zero_ablation_is_causal(model, site):
    tokens = _tokens(model)
    with torch.no_grad():
        clean = model(tokens)
    p = 5
    with ablated(model, Ablate(li.Target(site=site, layer=0, tokens=p))), torch.no_grad():
        ablated_logits = model(tokens)
    assert_close(ablated_logits[:, :p], clean[:, :p])
    assert (ablated_logits[:, p] - clean[:, p]).abs().max() > 1e-4


def test_resid_mid_write_reaches_the_output(model):
    """The bridge trap: a write at resid_mid must change resid_post, not only the MLP input."""
    tokens = _tokens(model)
    layer = model.cfg.n_layers - 1
    names = [f"blocks.{layer}.hook_mlp_out", f"blocks.{layer}.hook_resid_post"]
    with ablated(model, Ablate(f"blocks.{layer}.hook_resid_mid")):
        _, cache = _cached(model, tokens, names)
    assert_close(cache[names[1]], cache[names[0]])


def test_zeroed_residual_forgets_the_prompt(model):
    a, b = _tokens(model, "The sky is blue."), _tokens(model, "A cat sat on.")
    n = min(a.shape[1], b.shape[1])
    with ablated(model, Ablate("blocks.1.hook_resid_pre")), torch.no_grad():
        la, lb = model(a[:, :n]), model(b[:, :n])
    assert_close(la, lb)


def test_mean_and_truncate_match_direct_edits(model):
    tokens = _tokens(model)
    name = "blocks.0.hook_resid_post"
    _, cache = _cached(model, tokens, [name])
    clean = cache[name]
    mean = clean[0].mean(0)
    with ablated(
        model,
        Ablate("blocks.0.hook_resid_post[:, 2:4, 10:20]", mode="mean", reference=PROMPT),
        TruncateWidth("blocks.0.hook_resid_post[:, 6:, :]", keep=40),
    ):
        _, cache = _cached(model, tokens, [name])
    expected = clean.clone()
    expected[:, 2:4, 10:20] = mean[10:20]
    expected[:, 6:, 40:] = 0
    assert_close(cache[name], expected)


def test_resample_takes_the_reference_activation(model):
    tokens = _tokens(model)
    reference = "A cat sat on the mat while the dog slept"
    name = "blocks.1.hook_resid_pre"
    _, ref = _cached(model, _tokens(model, reference), [name])
    _, clean = _cached(model, tokens, [name])
    with ablated(model, Ablate("blocks.1.hook_resid_pre[:, 3, :]", mode="resample", reference=reference)):
        _, got = _cached(model, tokens, [name])
    expected = clean[name].clone()
    expected[:, 3] = ref[name][:, 3]
    assert_close(got[name], expected)


def test_freeze_norms_keeps_values_changes_gradients(gpt2):
    adapter = adapter_for(gpt2)
    tokens = _tokens(gpt2)

    def grad():
        embeds = adapter.embed(tokens).detach().requires_grad_(True)
        logits = adapter.run(tokens, embeds=embeds, need_logits=True).logits
        logits[0, -1].logsumexp(-1).backward()
        return logits.detach(), embeds.grad

    clean_logits, clean_grad = grad()
    with ablated(gpt2, FreezeLayerNorm()):
        frozen_logits, frozen_grad = grad()
    assert_close(frozen_logits, clean_logits)
    assert (frozen_grad - clean_grad).abs().max() > 1e-6


def test_unit_scale_divides_by_one(gpt2):
    tokens = _tokens(gpt2)
    with ablated(gpt2, BypassLayerNorm(which="final", mode="unit_scale")):
        logits, cache = _cached(gpt2, tokens, [f"blocks.{gpt2.cfg.n_layers - 1}.hook_resid_post"])
    resid = next(iter(cache.values()))
    ln = gpt2.ln_final
    weight = ln.weight if hasattr(ln, "weight") else ln.w
    bias = ln.bias if hasattr(ln, "bias") else ln.b
    adapter = adapter_for(gpt2)
    expected = ((resid - resid.mean(-1, keepdim=True)) * weight + bias) @ adapter.W_U + adapter.b_U
    assert_close(logits, expected, loose=10)


def test_context_raises_when_a_spec_never_fires_and_cleans_up(gpt2):
    snap = Snapshot(gpt2)
    with pytest.raises(li.HookNeverFiredError, match="RemoveResidual"):
        with ablated(gpt2, ZeroComponent(0, "attn"), RemoveResidual(1, around="attn")), torch.no_grad():
            gpt2(_tokens(gpt2), stop_at_layer=1)
    snap.assert_unchanged()
    with pytest.raises(RuntimeError, match="inside"):
        with ablated(gpt2, RemoveResidual(0)):
            raise RuntimeError("inside")
    snap.assert_unchanged()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RemoveResidual(0, around="both"), "around"),
        (lambda: BypassLayerNorm(layer=0, which="final"), "final norm"),
        (lambda: BypassLayerNorm(which="ln3"), "which"),
        (lambda: Ablate("blocks.0.hook_resid_post", mode="mean"), "reference"),
        (lambda: Ablate("logits"), "writable"),
        (lambda: TruncateWidth("blocks.0.hook_resid_post[:, :, :5]", keep=3), "without a feature slice"),
        (lambda: TruncateWidth("resid_post", keep=-1), "keep"),
    ],
)
def test_bad_specs_say_what_is_wrong(make, match):
    with pytest.raises(li.LensInversionError, match=match):
        make()


def test_bad_layer_is_named(gpt2):
    with pytest.raises(li.TargetError, match="layer=7"):
        with ablated(gpt2, RemoveResidual(7)):
            pass
