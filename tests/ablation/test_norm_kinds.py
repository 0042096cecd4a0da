"""Norm specs on every kind of norm: without weights, post-sub-layer, without hook_scale.

Each spec is checked against a hand-written forward: plain PyTorch forward hooks on the
Hugging Face norm modules that compute the norm by hand (frozen scale, unit scale, or the
identity), and the context must leave the logits exactly as they were.
"""

import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformer_lens.model_bridge")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "architectures"))
from catalog import model_dir, prompt_ids  # noqa: E402

import lens_inversion as li  # noqa: E402

# architecture -> (HF norm attributes of a decoder layer, LayerNorm (centred)?, affine convention)
NORMS = {
    "GPT2LMHeadModel": (("ln_1", "ln_2"), True, "weight+bias"),
    "OlmoForCausalLM": (("input_layernorm", "post_attention_layernorm"), True, "none"),  # no affine
    "NanoChatForCausalLM": (("input_layernorm", "post_attention_layernorm"), False, "none"),  # no weight
    "Olmo2ForCausalLM": (("post_attention_layernorm", "post_feedforward_layernorm"), False, "weight"),  # post-norm
    "Gemma4ForCausalLM": (  # sandwich norms, no hook_scale on the bridge
        ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
        False,
        "weight",
    ),
    "MambaForCausalLM": (("norm",), False, "weight"),  # a state-space block's one norm
}


def _load(arch):
    directory = model_dir(arch)  # every catalog model builds offline: a BuildError is a failure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return li.load_model(str(directory))


def _hf(module):
    """The Hugging Face module behind a bridge component (or the module itself)."""
    return getattr(module, "original_component", None) or module


def _hf_norms(model, arch):
    """The norm modules the HF decoder layers call (the bridge's wrappers, which some compute
    from scratch without calling the wrapped HF module) and the final norm."""
    attrs = NORMS[arch][0]
    layers = [_hf(block) for block in model.blocks]
    return [getattr(layer, a) for layer in layers for a in attrs] + [model.ln_final]


def _hand_norm(module, x, centred, affine, how):
    """The norm computed by hand: how = "real" | "frozen" (scale detached) | "unit" (scale one)."""
    module = _hf(module)  # its parameters and eps
    eps = next(v for v in (getattr(module, "eps", None), getattr(module, "variance_epsilon", None), 1e-5) if v)
    h = x.float()
    if centred:
        h = h - h.mean(-1, keepdim=True)
    scale = (h.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    if how == "frozen":
        scale = scale.detach()
    y = h if how == "unit" else h / scale
    if affine != "none" and getattr(module, "weight", None) is not None:
        y = y * module.weight.float()
    if affine == "weight+bias":
        y = y + module.bias.float()
    return y.to(x.dtype)


class _Hooks:
    """Forward hooks on HF modules that replace each output by fn(module, input)."""

    def __init__(self, modules, fn):
        self.modules, self.fn = modules, fn

    def __enter__(self):
        self.handles = [m.register_forward_hook(lambda m, a, out: self.fn(m, a[0])) for m in self.modules]

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _tokens(model):
    return torch.tensor([prompt_ids(model.tokenizer)])


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def _grad(model, tokens, weights):
    """d(sum(logits * weights)) / d(embedding output), through a leaf put in at hook_embed."""
    _, cache = model.run_with_cache(tokens, names_filter="hook_embed")
    leaf = cache["hook_embed"].clone().requires_grad_(True)
    with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: leaf)]):
        logits = model(tokens)
    (logits * weights).sum().backward()
    return logits.detach(), leaf.grad


@pytest.mark.parametrize("arch", list(NORMS))
def test_freeze_equals_hand_frozen_norms(arch):
    model = _load(arch)
    for p in model.parameters():
        p.requires_grad_(False)
    tokens = _tokens(model)
    _, centred, affine = NORMS[arch]
    norms = _hf_norms(model, arch)
    clean = _logits(model, tokens)
    # the hand-written norm is the model's own norm
    with _Hooks(norms, lambda m, x: _hand_norm(m, x, centred, affine, "real")):
        assert torch.allclose(_logits(model, tokens), clean, atol=1e-4, rtol=1e-4)
    weights = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    _, free_grad = _grad(model, tokens, weights)
    with _Hooks(norms, lambda m, x: _hand_norm(m, x, centred, affine, "frozen")):
        _, want = _grad(model, tokens, weights)
    with li.ablated(model, li.FreezeLayerNorm()):
        frozen_logits, got = _grad(model, tokens, weights)
    assert torch.equal(frozen_logits, clean)  # same forward values, bit for bit
    scale = want.abs().max()
    assert (got - want).abs().max() <= 1e-4 * scale
    assert (free_grad - want).abs().max() > 1e-3 * scale  # freezing changes the gradient
    assert torch.equal(_logits(model, tokens), clean)


@pytest.mark.parametrize("arch", list(NORMS))
def test_bypass_and_unit_scale_equal_hand_written_norms(arch):
    model = _load(arch)
    tokens = _tokens(model)
    _, centred, affine = NORMS[arch]
    norms = _hf_norms(model, arch)
    clean = _logits(model, tokens)
    with _Hooks(norms, lambda m, x: x):
        want_identity = _logits(model, tokens)
    with li.ablated(model, li.BypassLayerNorm()):
        got = _logits(model, tokens)
    assert torch.allclose(got, want_identity, atol=1e-4, rtol=1e-4)
    with _Hooks(norms, lambda m, x: _hand_norm(m, x, centred, affine, "unit")):
        want_unit = _logits(model, tokens)
    with li.ablated(model, li.BypassLayerNorm(mode="unit_scale")):
        got = _logits(model, tokens)
    tolerance = 1e-4 * max(1.0, float(want_unit.abs().max()))
    assert (got - want_unit).abs().max() <= tolerance
    with _Hooks(norms[-1:], lambda m, x: x):
        want_final = _logits(model, tokens)
    with li.ablated(model, li.BypassLayerNorm(which="final")):
        got = _logits(model, tokens)
    assert torch.allclose(got, want_final, atol=1e-4, rtol=1e-4)
    assert torch.equal(_logits(model, tokens), clean)


def test_post_norm_kinds_are_named_and_missing_kinds_refused():
    model = _load("Olmo2ForCausalLM")
    tokens = _tokens(model)
    post_attn = [block.original_component.post_attention_layernorm for block in model.blocks]
    with _Hooks(post_attn, lambda m, x: x):
        want = _logits(model, tokens)
    with li.ablated(model, li.BypassLayerNorm(which="ln1_post")):
        got = _logits(model, tokens)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    for which in ("ln1", "ln2"):
        with pytest.raises(
            li.UnsupportedModelError,
            match=r"no ln. to bypass or freeze; its norms: "
            r"ln1_post, ln2_post in blocks 0-1; ln_final",
        ):
            with li.ablated(model, li.FreezeLayerNorm(which=which)):
                model(tokens)


def test_state_space_block_norm_is_ln1_and_residual_removal_is_refused():
    model = _load("MambaForCausalLM")
    tokens = _tokens(model)
    block_norms = [block.original_component.norm for block in model.blocks]
    with _Hooks(block_norms, lambda m, x: x):
        want = _logits(model, tokens)
    with li.ablated(model, li.BypassLayerNorm(which="ln1")):
        got = _logits(model, tokens)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(li.UnsupportedModelError, match="no ln2 to bypass or freeze; its norms: ln1 in blocks 0-1"):
        with li.ablated(model, li.BypassLayerNorm(which="ln2")):
            model(tokens)
    for around in ("attn", "mlp"):
        with pytest.raises(li.UnsupportedModelError, match="has no hook point 'blocks.0.hook_resid_mid'"):
            with li.ablated(model, li.RemoveResidual(0, around=around)):
                model(tokens)


def test_no_final_norm_is_refused_with_what_exists():
    model = _load("OpenAIGPTLMHeadModel")
    with pytest.raises(li.UnsupportedModelError, match="no ln_final to bypass or freeze; its norms: ln1, ln2"):
        with li.ablated(model, li.BypassLayerNorm(which="final")):
            model(_tokens(model))


@pytest.mark.parametrize("arch", ["GraniteForCausalLM", "Olmo2ForCausalLM", "GPT2LMHeadModel"])
def test_remove_mlp_residual_leaves_the_mlp_contribution(arch):
    """resid_post = what the MLP side adds: Granite's multiplier and OLMo-2's post-norm included."""
    model = _load(arch)
    tokens = _tokens(model)
    layer = model.cfg.n_layers - 1
    names = [f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_resid_post"]
    clean = _logits(model, tokens)
    with li.ablated(model, li.RemoveResidual(layer, around="mlp")), torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    mid, post = cache[names[0]], cache[names[1]]
    hf = model.blocks[layer].original_component
    with torch.no_grad():
        if arch == "GraniteForCausalLM":
            want = hf.mlp(hf.post_attention_layernorm(mid)) * hf.residual_multiplier
        elif arch == "Olmo2ForCausalLM":
            want = hf.post_feedforward_layernorm(hf.mlp(mid))
        else:
            want = hf.mlp(hf.ln_2(mid))
    assert torch.allclose(post, want, atol=1e-5, rtol=1e-4)
    assert torch.equal(_logits(model, tokens), clean)
