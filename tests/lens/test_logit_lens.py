"""The logit lens against an independent per-row loop, on every fixture model."""

import pytest
import torch
from _tolerances import assert_close
from fixture_models import _hf, _native
from lens_refs import reference_lens

from lens_inversion.errors import LensInversionError
from lens_inversion.lens import logit_lens

PROMPT = "The sky is blue. The sky is"


@pytest.mark.parametrize("compare", ["final", "input"])
def test_matches_per_row_loop(model, compare):
    lens = logit_lens(model, PROMPT, compare=compare, progress=False)
    tokens = lens.tokens[None]
    ref, logits = reference_lens(model, tokens, compare=compare)
    assert lens.kl.shape == (model.cfg.n_layers + 1, tokens.shape[1])
    assert_close(lens.kl, ref["kl"][:, 0], atol=1e-5, rtol=1e-4)
    assert torch.equal(lens.rank, ref["rank"][:, 0].float())
    assert_close(lens.prob, ref["prob"][:, 0])
    assert_close(lens.entropy, ref["entropy"][:, 0], rtol=1e-4)
    assert_close(lens.cross_entropy, ref["cross_entropy"][:, 0], rtol=1e-4, equal_nan=True)
    assert torch.equal(lens.top_tokens[..., 0], ref["top1"][:, 0])
    # The last row is the model's own output.
    assert torch.equal(lens.final_top1, logits[0].argmax(-1))
    assert torch.equal(lens.top_tokens[-1, :, 0], logits[0].argmax(-1))
    assert_close(lens.top_probs[-1, :, 0], logits[0].float().softmax(-1).max(-1).values)
    if compare == "final":
        assert torch.equal(lens.kl[-1], torch.zeros_like(lens.kl[-1]))
        assert torch.equal(lens.rank[-1], torch.ones_like(lens.rank[-1]))
    else:
        assert torch.equal(lens.kl[0], torch.zeros_like(lens.kl[0]))
        decodes_to_itself = lens.top_tokens[0, :, 0] == lens.tokens
        assert torch.equal(lens.rank[0] == 1, decodes_to_itself)


def test_sublayers_and_small_chunks(gpt2, llama):
    for model in (gpt2, llama):
        # chunk_size=5 splits rows into position pieces; 40 groups several rows per chunk.
        for chunk in (5, 40, None):
            lens = logit_lens(model, PROMPT, rows="sublayers", chunk_size=chunk, progress=False)
            ref, _ = reference_lens(model, lens.tokens[None], rows="sublayers")
            assert len(lens.row_labels) == 2 * model.cfg.n_layers + 1
            assert_close(lens.kl, ref["kl"][:, 0], atol=1e-5, rtol=1e-4)
            assert torch.equal(lens.rank, ref["rank"][:, 0].float())


def test_batch_is_padded_and_matches_single_prompts(model):
    prompts = ["The sky is blue.", "A cat sat on the mat while the dog"]
    lens = logit_lens(model, prompts, compare="final", progress=False)
    assert lens.kl.shape[0] == 2 and lens.kl.ndim == 3
    for b, text in enumerate(prompts):
        one = logit_lens(model, text, progress=False)
        n = one.kl.shape[-1]
        assert_close(lens.kl[b, :, :n], one.kl, atol=1e-5, rtol=1e-4)
        assert torch.equal(lens.rank[b, :, :n], one.rank)
        assert torch.isnan(lens.kl[b, :, n:]).all() and torch.isnan(lens.rank[b, :, n:]).all()
        assert (lens.top_tokens[b, :, n:] == -1).all()
        assert lens.str_tokens[b][:n] == one.str_tokens


def test_user_hooks_are_seen(gpt2):
    def zero_attn(x, hook):
        return torch.zeros_like(x)

    hooks = [("blocks.0.hook_attn_out", zero_attn)]
    plain = logit_lens(gpt2, PROMPT, progress=False)
    with gpt2.hooks(fwd_hooks=hooks):
        ablated = logit_lens(gpt2, PROMPT, progress=False)
    ref, _ = reference_lens(gpt2, plain.tokens[None], hooks=hooks)
    assert not torch.allclose(plain.kl, ablated.kl)
    assert_close(ablated.kl, ref["kl"][:, 0], atol=1e-5, rtol=1e-4)


def test_ablation_context_is_seen(llama):
    from lens_inversion.ablation import ZeroComponent, ablated

    with ablated(llama, ZeroComponent(1, "mlp")):
        lens = logit_lens(llama, PROMPT, progress=False)
    ref, _ = reference_lens(llama, lens.tokens[None], hooks=[("blocks.1.hook_mlp_out", lambda x, hook: x * 0)])
    assert not torch.allclose(lens.kl, logit_lens(llama, PROMPT, progress=False).kl)
    assert_close(lens.kl, ref["kl"][:, 0], atol=1e-5, rtol=1e-4)
    assert torch.equal(lens.rank, ref["rank"][:, 0].float())


def test_precomputed_cache_gives_the_same_result(model):
    lens = logit_lens(model, PROMPT, rows="sublayers", progress=False)
    _, cache = model.run_with_cache(lens.tokens[None], names_filter=lambda n: "hook_resid" in n)
    cached = logit_lens(model, PROMPT, rows="sublayers", cache=cache, progress=False)
    assert_close(cached.kl, lens.kl, atol=1e-5, rtol=1e-4)
    assert torch.equal(cached.rank, lens.rank)


def test_cache_under_canonical_bridge_names(gpt2):
    lens = logit_lens(gpt2, PROMPT, rows="sublayers", progress=False)
    wanted = ("hook_in", "hook_out")

    def canonical(name):
        return name.startswith("blocks.") and name.count(".") <= 3 and name.endswith(wanted)

    _, cache = gpt2.run_with_cache(lens.tokens[None], names_filter=canonical)
    cached = logit_lens(gpt2, PROMPT, rows="sublayers", cache=cache, progress=False)
    assert_close(cached.kl, lens.kl, atol=1e-5, rtol=1e-4)


def test_layers_and_positions_select_the_same_cells(llama):
    full = logit_lens(llama, PROMPT, progress=False)
    part = logit_lens(llama, PROMPT, layers=[0], positions=slice(2, 6), progress=False)
    assert part.row_labels == ["embed", "0", "output"]
    assert part.positions == [2, 3, 4, 5]
    assert_close(part.kl, full.kl[:, 2:6], atol=1e-6)
    assert torch.equal(part.rank, full.rank[:, 2:6])
    assert part.str_tokens == full.str_tokens[2:6]
    last = logit_lens(llama, PROMPT, positions=-1, layers=-1, progress=False)
    assert last.row_labels == ["embed", "output"] and last.kl.shape == (2, 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["gpt2-native", "llama-hf"])
def test_half_precision_models_give_finite_float32_metrics(name, dtype):
    kind, source = name.split("-")
    model = (_native(kind) if source == "native" else _hf(kind, compat=False)).to(dtype)  # our own copy
    lens = logit_lens(model, PROMPT, progress=False)
    for value in (lens.kl, lens.rank, lens.prob, lens.entropy, lens.top_probs):
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
    with torch.no_grad():
        logits = model(lens.tokens[None])
    assert torch.equal(lens.final_top1, logits[0].argmax(-1))
    assert torch.equal(lens.kl[-1], torch.zeros_like(lens.kl[-1]))
    ref, _ = reference_lens(model, lens.tokens[None])
    assert_close(lens.kl, ref["kl"][:, 0], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(compare="middle"), "compare"),
        (dict(rows="heads"), "rows"),
        (dict(top_k=0), "top_k"),
        (dict(positions=[99]), "positions"),
        (dict(layers=[5]), "layers"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(cache={"hook_embed": torch.zeros(1)}), "cache has no"),
    ],
)
def test_bad_options_raise(gpt2, kwargs, match):
    with pytest.raises(LensInversionError, match=match):
        logit_lens(gpt2, PROMPT, progress=False, **kwargs)


def test_auto_chunk_bounds_the_working_set():
    from lens_inversion.lens.logit_lens import _TEMPORARIES, CHUNK_BYTES, auto_chunk_size

    assert auto_chunk_size(50257, 13 * 1024) * 50257 * 4 * _TEMPORARIES <= CHUNK_BYTES
    assert auto_chunk_size(300, 50) == 50
