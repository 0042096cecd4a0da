"""The logit lens on architectures with unusual blocks (tiny models of tests/architectures/catalog.py)."""

import sys
from pathlib import Path

import pytest
import torch
from untouched import Snapshot, _hooks

import lens_inversion as li

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "architectures"))
import catalog  # noqa: E402

pytestmark = pytest.mark.backend_generic

TOKENS = torch.tensor([1, 5, 9, 14, 3, 7])


def _load(arch: str):
    model = catalog.load(arch)
    with torch.no_grad():
        model(TOKENS[None])  # already run once, as a user's model would be
    return model


# ----- 3. Bloom: blocks that never wire the bridge's capture hooks themselves ----------
@pytest.fixture(scope="module")
def bloom():
    return _load("BloomForCausalLM")


def test_lens_leaves_bloom_hook_set_exactly_as_before(bloom):
    before = _hooks(bloom)
    wired = [block._capture_hooks_wired for block in bloom.blocks]
    snap = Snapshot(bloom)
    li.logit_lens(bloom, TOKENS, progress=False)
    li.logit_lens(bloom, TOKENS, rows="sublayers", progress=False)
    assert _hooks(bloom) == before
    assert [block._capture_hooks_wired for block in bloom.blocks] == wired
    snap.assert_unchanged()


def test_preserved_keeps_the_users_own_lens_hooks(bloom):
    """A user's TransformerLens hook added before our call still fires; ours are gone."""
    seen = []
    bloom.add_hook("blocks.0.hook_resid_post", lambda x, hook: seen.append(1))
    try:
        li.logit_lens(bloom, TOKENS, progress=False)
        point = bloom.hook_dict["blocks.0.hook_resid_post"]
        assert len(point.fwd_hooks) == 1
        calls = len(seen)
        with torch.no_grad():
            bloom(TOKENS[None])
        assert len(seen) == calls + 1
    finally:
        bloom.reset_hooks()


def test_bridge_wiring_restored_unwires_what_it_found_unwired(bloom):
    from lens_inversion.hooks.adapter import wire_bridge_internals
    from lens_inversion.hooks.preserve import bridge_wiring_restored

    before = _hooks(bloom)
    with bridge_wiring_restored(bloom):
        wire_bridge_internals(bloom)
        assert _hooks(bloom) != before  # the wiring adds pre-hooks on the norms
    assert _hooks(bloom) == before


# ----- 4. OPT: resid_mid inside the flattened [batch·pos, d] region --------------------
def test_opt_sublayer_lens_rows_equal_hf_decoding():
    model = _load("OPTForCausalLM")
    lens = li.logit_lens(model, TOKENS, rows="sublayers", progress=False)
    # Independent: resid_mid is the raw input of each layer's final_layer_norm (a PyTorch
    # pre-hook, flattened by HF), decoded by HF's final norm and head.
    raw = {}
    handles = [
        block.ln2.register_forward_pre_hook(lambda m, args, layer=layer: raw.__setitem__(layer, args[0].detach()))
        for layer, block in enumerate(model.blocks)
    ]
    try:
        with torch.no_grad():
            model(TOKENS[None])
    finally:
        for handle in handles:
            handle.remove()
    decoder = model.original_model.model.decoder
    for layer in range(model.cfg.n_layers):
        row = lens.row_labels.index(f"{layer} attn")
        resid = raw[layer].view(1, len(TOKENS), -1)
        with torch.no_grad():
            normed = decoder.final_layer_norm(resid)
            if decoder.project_out is not None:
                normed = decoder.project_out(normed)
            logp = torch.log_softmax(model.original_model.lm_head(normed)[0].float(), -1)
        entropy = -(logp.exp() * logp).sum(-1)
        torch.testing.assert_close(lens.entropy[row], entropy, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(lens.top_probs[row, :, 0], logp.exp().max(-1).values, rtol=1e-4, atol=1e-5)
