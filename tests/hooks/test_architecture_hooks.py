"""Hooks on architectures whose bridge bypasses, never fires or reshapes hook points.

Each test uses a tiny random model of tests/architectures/catalog.py and checks our hooks
against Hugging Face's own forward (`output_hidden_states`) or plain PyTorch hooks.
"""

import sys
import warnings
from pathlib import Path

import pytest
import torch
from untouched import Snapshot

from lens_inversion.hooks import attached

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "architectures"))
import catalog  # noqa: E402
from catalog import model_dir  # noqa: E402

# Not backend_generic: these pin TransformerLens 4's bridge. On TransformerLens 3.9's bridge
# Granite's hook_embed is the unscaled token embedding W_E[t] (the embedding multiplier is
# applied after the hook), so it differs from HF's scaled embedding (by 0.77 here); see
# test_granite_hook_embed_on_every_bridge for what holds on both.

TOKENS = torch.tensor([[1, 5, 9, 14, 3, 7]])


def _load(arch: str, **kwargs):
    return catalog.load(arch, **kwargs)


def _hf_hidden(model, tokens):
    """Hugging Face's own hidden states: [embedding output, block 0 output, ...]."""
    with torch.no_grad():
        out = model.original_model(tokens, output_hidden_states=True)
    return out.hidden_states


def _capture(model, names, tokens=TOKENS):
    got = {}
    hooks = [(name, lambda x, hook, name=name: got.__setitem__(name, x.detach().clone())) for name in names]
    with torch.no_grad(), attached(model, hooks):
        model(tokens)
    return got


# ----- 1. scaled hook points (Granite's real multipliers) ------------------------------
@pytest.fixture(scope="module")
def granite():
    model = _load("GraniteForCausalLM")
    cfg = model.original_model.config
    assert cfg.embedding_multiplier != 1 and cfg.residual_multiplier != 1  # the case under test
    return model


@pytest.mark.backend_generic
def test_granite_hook_embed_on_every_bridge(granite):
    """resid_pre[0] is HF's (scaled) embedding output on every bridge; hook_embed is that (4.x) or
    W_E[t] before the multiplier (3.9), and the adapter's embed() is whatever hook_embed is, so
    embeddings written there pass through the multiplier exactly as the model's own do."""
    from lens_inversion.hooks.adapter import ModelAdapter

    got = _capture(granite, ["hook_embed", "blocks.0.hook_resid_pre"])
    hidden = _hf_hidden(granite, TOKENS)
    torch.testing.assert_close(got["blocks.0.hook_resid_pre"], hidden[0], rtol=1e-5, atol=1e-6)
    table = granite.original_model.get_input_embeddings().weight[TOKENS].detach()
    multiplier = granite.original_model.config.embedding_multiplier
    scaled = torch.allclose(got["hook_embed"], table * multiplier, rtol=1e-5, atol=1e-6)
    assert scaled or torch.allclose(got["hook_embed"], table, rtol=1e-5, atol=1e-6), "hook_embed is neither"
    torch.testing.assert_close(ModelAdapter(granite).embed(TOKENS), got["hook_embed"], rtol=1e-5, atol=1e-6)


def test_scaled_embedding_hook_fires_with_hf_value(granite):
    got = _capture(granite, ["hook_embed", "blocks.0.hook_resid_post"])
    hidden = _hf_hidden(granite, TOKENS)
    torch.testing.assert_close(got["hook_embed"], hidden[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["blocks.0.hook_resid_post"], hidden[1], rtol=1e-5, atol=1e-6)


def test_scaled_embedding_write_takes_effect(granite):
    """Replacing hook_embed by its own value times 2 equals HF run on 2 × the embeddings."""
    cfg = granite.original_model.config
    embeds = granite.original_model.model.embed_tokens(TOKENS).detach()
    with torch.no_grad(), attached(granite, [("hook_embed", lambda x, hook: 2 * x)]):
        ours = granite(TOKENS)
    with torch.no_grad():
        # HF multiplies inputs_embeds by embedding_multiplier itself.
        ref = granite.original_model(inputs_embeds=2 * embeds).logits
    assert cfg.embedding_multiplier != 1
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_scaled_attention_and_mlp_outputs_fire_and_zero(granite):
    got = _capture(granite, ["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_pre",
                             "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"])
    # hook_attn_out / hook_mlp_out are the scaled contributions: the residual identities hold.
    torch.testing.assert_close(got["blocks.0.hook_resid_pre"] + got["blocks.0.hook_attn_out"],
                               got["blocks.0.hook_resid_mid"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["blocks.0.hook_resid_mid"] + got["blocks.0.hook_mlp_out"],
                               got["blocks.0.hook_resid_post"], rtol=1e-5, atol=1e-5)
    zero = [("blocks.0.hook_attn_out", lambda x, hook: torch.zeros_like(x))]
    mid = {}
    with torch.no_grad(), attached(granite, [*zero, ("blocks.0.hook_resid_mid", lambda x, hook: mid.setdefault("x", x))]):
        granite(TOKENS)
    torch.testing.assert_close(mid["x"], got["blocks.0.hook_resid_pre"])


def test_granite_hooks_leave_no_trace(granite):
    snap = Snapshot(granite)
    point = granite.hook_dict["hook_embed"]
    with attached(granite, [("hook_embed", lambda x, hook: None)], require_fire=False):
        assert point.has_hooks()
    assert not point.has_hooks() and point.fwd_hooks == []
    snap.assert_unchanged()


def test_user_reset_hooks_inside_does_not_drop_ours(granite):
    with torch.no_grad(), attached(granite, [("hook_embed", lambda x, hook: None)]) as counts:
        granite.reset_hooks()
        granite(TOKENS)
    assert counts == [1]


# ----- 2. a block whose Hugging Face layer returns a list (OpenAI-GPT) -----------------
def test_list_output_block_hook_fires_with_hf_value():
    model = _load("OpenAIGPTLMHeadModel")
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    got = _capture(model, names)
    hidden = _hf_hidden(model, TOKENS)
    for layer, name in enumerate(names):
        torch.testing.assert_close(got[name], hidden[layer + 1], rtol=1e-5, atol=1e-6)
    # TransformerLens's own hooks see it too on a model from li.load_model.
    _, cache = model.run_with_cache(TOKENS, names_filter=names[-1])
    torch.testing.assert_close(cache[names[-1]], hidden[-1], rtol=1e-5, atol=1e-6)


def test_list_output_repair_is_temporary_on_a_user_booted_bridge():
    from transformer_lens.model_bridge import TransformerBridge

    path = model_dir("OpenAIGPTLMHeadModel")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformerBridge.boot_transformers(str(path), device="cpu").eval()
    with torch.no_grad():
        model(TOKENS)
    snap = Snapshot(model)
    got = _capture(model, ["blocks.1.hook_resid_post"])
    torch.testing.assert_close(got["blocks.1.hook_resid_post"], _hf_hidden(model, TOKENS)[2], rtol=1e-5, atol=1e-6)
    snap.assert_unchanged()


# ----- 4. OPT flattens its MLP region to [batch·pos, d] --------------------------------
def test_opt_mlp_region_hooks_are_batch_pos():
    model = _load("OPTForCausalLM")
    tokens = torch.cat([TOKENS, TOKENS.flip(-1)])
    raw = {}
    # Plain PyTorch pre-hook on the MLP norm: the raw (flattened) input, independent of our hooks.
    handle = model.blocks[0].ln2.register_forward_pre_hook(lambda m, args: raw.setdefault("x", args[0].detach()))
    try:
        got = _capture(model, ["blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out"], tokens)
    finally:
        handle.remove()
    assert raw["x"].shape == (tokens.numel(), model.cfg.d_model)
    assert got["blocks.0.hook_resid_mid"].shape == (*tokens.shape, model.cfg.d_model)
    assert got["blocks.0.hook_mlp_out"].shape == (*tokens.shape, model.cfg.d_model)
    torch.testing.assert_close(got["blocks.0.hook_resid_mid"], raw["x"].view(*tokens.shape, -1))
