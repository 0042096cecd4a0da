"""Prompts at the context limit, one token past it, and batches of different lengths."""

import pytest
import torch
from _tolerances import assert_close
from fixture_models import build, has_hooked_transformer
from references import grad_x_input_reference

import lens_inversion as li
from lens_inversion.hooks import adapter_for

pytestmark = pytest.mark.backend_generic
Q = dict(progress=False)
# Both architectures as bridges; on TransformerLens 3.x (the backend_generic lane) also as HookedTransformer.
NAMES = ["gpt2-native", "llama-native", *(["gpt2-hooked", "llama-hooked"] if has_hooked_transformer() else [])]


def _ids(model, n, seed=0):
    """BOS followed by n - 1 random ordinary tokens: a [1, n] prompt of exactly n tokens."""
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(2, model.cfg.d_vocab, (1, n - 1), generator=g)
    return torch.cat([torch.tensor([[model.tokenizer.bos_token_id]]), body], dim=1)


def _text(model, n):
    """A prefix of the fixture corpus that tokenizes to exactly n tokens with BOS."""
    from fixture_models import CORPUS

    text = " ".join(CORPUS[:7])
    for end in range(1, len(text) + 1):
        if len(model.tokenizer.encode(text[:end], add_special_tokens=False)) + 1 == n:
            return text[:end]
    raise AssertionError(f"no corpus prefix of {n} tokens")


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens, attention_mask=torch.ones_like(tokens))


@pytest.mark.parametrize("name", NAMES)
def test_prompt_at_n_ctx(name):
    model = build(name)
    n_ctx = model.cfg.n_ctx
    tokens = _ids(model, n_ctx)
    logits = _logits(model, tokens)

    lens = li.logit_lens(model, tokens[0], chunk_size=40, **Q)
    assert lens.kl.shape == (model.cfg.n_layers + 1, n_ctx) and torch.isfinite(lens.kl).all()
    assert torch.equal(lens.final_top1, logits[0].argmax(-1))
    _, cache = model.run_with_cache(tokens, attention_mask=torch.ones_like(tokens))
    with torch.no_grad():
        first = model.unembed(model.ln_final(cache["blocks.0.hook_resid_post"]))[0].log_softmax(-1)
    final = logits[0].log_softmax(-1)
    assert_close(lens.kl[1], (final.exp() * (final - first)).sum(-1), atol=1e-5, rtol=1e-4)

    token = 11
    attr = li.attribute(model, tokens[0], answer=token, normalize="none", **Q)
    expected = grad_x_input_reference(model, tokens, token, adapter_for(model).embed_scale)
    assert_close(attr.raw_scores, expected, atol=1e-5, rtol=1e-4)

    occ = li.attribute(model, tokens, method="occlusion", answer=token, normalize="none", **Q)
    for c in (1, n_ctx // 2, n_ctx - 1):  # first, middle and last positions against single forwards
        occluded = tokens.clone()
        occluded[0, c] = adapter_for(model).pad_token_id
        naive = (_logits(model, occluded)[0, -1, token] - logits[0, -1, token]).abs()
        assert_close(occ.raw_scores[c], naive, atol=1e-4, rtol=1e-4)

    res = li.invert(model, tokens, target="blocks.1.hook_resid_post", method="exact", seed=0, **Q)
    assert res.token_accuracy == 1.0 and torch.equal(res.tokens, tokens)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m, p: li.logit_lens(m, p, **Q), id="logit_lens"),
        pytest.param(lambda m, p: li.attribute(m, p, **Q), id="attribute"),
        pytest.param(lambda m, p: li.invert(m, p, target="resid_post.0", method="exact", **Q), id="invert-exact"),
        pytest.param(lambda m, p: li.invert(m, p, target="resid_post.0", steps=1, **Q), id="invert-gradient"),
        pytest.param(lambda m, p: li.ablation_sweep(m, p, **Q), id="ablation_sweep"),
        pytest.param(lambda m, p: li.Target.parse("resid_post.0").extract(m, p), id="target-extract"),
    ],
)
def test_one_token_past_n_ctx_is_refused(call):
    model = build("gpt2-native")
    n_ctx = model.cfg.n_ctx
    for prompt in (_ids(model, n_ctx + 1), [model.tokenizer.decode(_ids(model, 4)[0, 1:]), "blue " * n_ctx]):
        with pytest.raises(li.PromptError, match=rf"has \d+ tokens but the model's context \(n_ctx\) is {n_ctx}"):
            call(model, prompt)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("compare", ["final", "input"])
def test_batch_of_different_lengths_equals_each_prompt_alone(name, compare):
    model = build(name)
    lengths = [model.cfg.n_ctx, 2, 9, 17]
    texts = [_text(model, n) for n in lengths]
    lens = li.logit_lens(model, texts, compare=compare, rows="sublayers", chunk_size=7, **Q)
    width = max(lengths)
    assert lens.kl.shape == (len(texts), 2 * model.cfg.n_layers + 1, width)
    for b, (text, n) in enumerate(zip(texts, lengths, strict=True)):
        alone = li.logit_lens(model, text, compare=compare, rows="sublayers", **Q)
        assert alone.kl.shape[-1] == n
        assert_close(lens.kl[b, :, :n], alone.kl, atol=1e-5, rtol=1e-4)
        assert_close(lens.prob[b, :, :n], alone.prob, atol=1e-6, rtol=1e-4)
        assert torch.equal(lens.rank[b, :, :n], alone.rank)
        assert torch.equal(lens.top_tokens[b, :, :n], alone.top_tokens)
        assert torch.isnan(lens.kl[b, :, n:]).all() and (lens.top_tokens[b, :, n:] == -1).all()
        assert lens.str_tokens[b][:n] == alone.str_tokens


@pytest.mark.parametrize("name", NAMES)
def test_batched_extract_equals_each_prompt_alone(name):
    model = build(name)
    texts = ["The sky is blue. The grass is green.", "A cat", "In the morning the birds sing"]
    target = li.Target.parse("blocks.1.hook_resid_mid[:, :, 5:20]")
    both = target.extract(model, texts)
    for b, text in enumerate(texts):
        alone = target.extract(model, text)
        assert_close(both[b, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-4)
