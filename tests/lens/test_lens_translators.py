"""`logit_lens(lens=...)`: a callable or a Jacobian lens against per-row references computed by hand."""

import pytest
import torch
import torch.nn.functional as F
from _tolerances import assert_close
from lens_refs import resid_rows

import lens_inversion as li
from lens_inversion.errors import OptionError, UnsupportedModelError

PROMPT = "The sky is blue. Paris is the capital of France. The cat says meow and the dog says woof."
FIT_PROMPTS = [
    "The sky is blue and the grass is green. Paris is the capital of France, and Rome is the capital of Italy.",
    "The cat says meow. The dog says woof. The cow says moo. The duck says quack and the sheep says baa.",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday. one two three four five six seven eight nine ten.",
]


_DIRECTION = torch.linspace(-1.0, 1.0, 128) ** 3  # not removed by the final LayerNorm's centring


def _shift_and_scale(resid, hook_name):
    """A lens that differs per row, so a row decoded with the wrong translator shows."""
    layer = int(hook_name.split(".")[1]) + (1 if hook_name.endswith("resid_post") else 0)
    return resid * (1.0 + 0.25 * layer) + (layer + 1) * _DIRECTION * resid.norm(dim=-1, keepdim=True) / 4


def _reference(model, tokens, translate):
    """KL(final ‖ row) and the final top-1's rank per row, one row at a time with torch.nn.functional."""
    n = model.cfg.n_layers
    names = ["blocks.0.hook_resid_pre", *[f"blocks.{layer}.hook_resid_post" for layer in range(n - 1)]]
    with torch.no_grad():
        resids, logits = resid_rows(model, tokens)
        rows = [model.unembed(model.ln_final(translate(r, name))).float() for r, name in zip(resids, names, strict=True)]
    final = F.log_softmax(logits.float(), -1)
    top1 = logits.argmax(-1)
    kl, rank = [], []
    for z in rows:
        lp = F.log_softmax(z, -1)
        kl.append(F.kl_div(lp, final, reduction="none", log_target=True).sum(-1)[0])
        order = lp.argsort(-1, descending=True)
        rank.append(((order == top1[..., None]).float().argmax(-1) + 1)[0].float())
    return torch.stack(kl), torch.stack(rank)


@pytest.fixture(scope="module")
def jacobian(tiny):
    from transformer_lens.tools.analysis import JacobianLens

    return JacobianLens.fit(tiny, FIT_PROMPTS, corpus="test", show_progress=False, dim_batch=32)


def test_callable_lens_matches_a_per_row_reference(tiny):
    lens = li.logit_lens(tiny, PROMPT, lens=_shift_and_scale, progress=False)
    kl, rank = _reference(tiny, lens.tokens[None], _shift_and_scale)
    assert lens.lens == "custom" and lens.row_lenses == ["custom"] * (len(lens.row_labels) - 1) + ["model"]
    assert_close(lens.kl[:-1], kl, atol=1e-5, rtol=1e-4)
    assert torch.equal(lens.rank[:-1], rank)
    assert torch.equal(lens.kl[-1], torch.zeros_like(lens.kl[-1]))  # the output row is never translated
    plain = li.logit_lens(tiny, PROMPT, progress=False)
    assert (lens.kl[1:-1] - plain.kl[1:-1]).abs().max() > 0.1  # the translation did change the rows


def test_jacobian_lens_matches_transformer_lens_own_readout(tiny, jacobian):
    lens = li.logit_lens(tiny, PROMPT, lens=jacobian, compare="final", progress=False)
    own = jacobian.readout(tiny, PROMPT, return_full_logits=True, top_k=3)
    final = F.log_softmax(own.model_logits, -1)
    for layer in jacobian.source_layers:  # block l's output is our row l + 1
        lp = F.log_softmax(own.lens_logits[layer], -1)
        assert_close(lens.kl[layer + 1], F.kl_div(lp, final, reduction="none", log_target=True).sum(-1), atol=2e-5, rtol=1e-4)
        assert_close(lens.prob[layer + 1], lp.exp().gather(-1, final.argmax(-1, keepdim=True))[:, 0], atol=1e-6, rtol=1e-4)
        entropy = -(lp.exp() * lp).sum(-1)
        assert_close(lens.entropy[layer + 1], entropy, atol=2e-5, rtol=1e-4)
    # The embedding row has no transport matrix: decoded by the identity, and the result says so.
    assert lens.row_lenses == ["logit", "jacobian", "jacobian", "jacobian", "model"]
    assert lens.lens_title == "Jacobian lens (rows embed with the logit lens)"
    plain = li.logit_lens(tiny, PROMPT, progress=False)
    assert torch.equal(lens.kl[0], plain.kl[0])


def test_jacobian_lens_with_a_batch_a_cache_and_input_comparison(tiny, jacobian):
    prompts = [PROMPT, "The sky is blue."]
    batch = li.logit_lens(tiny, prompts, lens=jacobian, progress=False)
    for b, text in enumerate(prompts):
        one = li.logit_lens(tiny, text, lens=jacobian, progress=False)
        n = one.kl.shape[-1]
        assert_close(batch.kl[b, :, :n], one.kl, atol=1e-5, rtol=1e-4)
    _, cache = tiny.run_with_cache(tiny.to_tokens(PROMPT))
    cached = li.logit_lens(tiny, PROMPT, lens=jacobian, cache=cache, progress=False)
    fresh = li.logit_lens(tiny, PROMPT, lens=jacobian, progress=False)
    assert_close(cached.kl, fresh.kl, atol=1e-5, rtol=1e-4)
    inp = li.logit_lens(tiny, PROMPT, lens=jacobian, compare="input", progress=False)
    assert torch.equal(inp.kl[0], torch.zeros_like(inp.kl[0]))  # the embedding row (identity) is the reference


def test_sublayer_rows_without_translators_are_refused(tiny, jacobian):
    with pytest.raises(OptionError, match=r"no translators for the sub-layer rows \['0 attn'.*rows='blocks'"):
        li.logit_lens(tiny, PROMPT, lens=jacobian, rows="sublayers", progress=False)
    sub = li.logit_lens(tiny, PROMPT, lens=lambda r, name: r, rows="sublayers", progress=False)
    assert_close(sub.kl, li.logit_lens(tiny, PROMPT, rows="sublayers", progress=False).kl, atol=0, rtol=0)


@pytest.mark.parametrize("bad", ["tuned", "Logit", 3, None, torch.zeros(3), str])
def test_what_is_not_a_lens_is_refused_naming_the_choices(tiny, bad):
    with pytest.raises(OptionError, match=r"'logit'.*TunedLens.*JacobianLens.*callable"):
        li.logit_lens(tiny, PROMPT, lens=bad, progress=False)


def test_a_callable_of_the_wrong_shape_is_refused(tiny):
    with pytest.raises(OptionError, match=r"residual's shape.*blocks\.0\.hook_resid_pre.*returned \(1, 64\)"):
        li.logit_lens(tiny, PROMPT, lens=lambda r, name: r[..., :64], progress=False)
    with pytest.raises(OptionError, match="returned NoneType"):
        li.logit_lens(tiny, PROMPT, lens=lambda r, name: None, progress=False)


def test_jacobian_lens_refuses_a_compatibility_mode_model(jacobian):
    model = li.load_model("tiny", compatibility_mode=True)
    with pytest.raises(UnsupportedModelError, match="Jacobian lens refuses this model: compatibility mode"):
        li.logit_lens(model, PROMPT, lens=jacobian, progress=False)


def test_jacobian_lens_of_another_model_is_refused(gpt2, jacobian):
    with pytest.raises(UnsupportedModelError, match="fitted for model '.*tiny', but the supplied model is"):
        li.logit_lens(gpt2, "The sky is blue.", lens=jacobian, progress=False)
    from transformer_lens.tools.analysis import JacobianLens

    anonymous = JacobianLens(jacobian.jacobians, n_prompts=1, d_model=128)  # no provenance: the width still tells
    with pytest.raises(UnsupportedModelError, match="d_model=128"):
        li.logit_lens(gpt2, "The sky is blue.", lens=anonymous, progress=False)
