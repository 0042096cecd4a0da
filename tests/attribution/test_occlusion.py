"""Batched occlusion equals a naive loop of single forwards on the model itself."""

import pytest
import torch
from _tolerances import assert_close
from attribution_refs import PROMPT, activation, logits, tokens_of

from lens_inversion.attribution import attribute


def test_occlusion_equals_naive_loop(model):
    tokens = tokens_of(model)
    pad = model.tokenizer.pad_token_id
    clean = logits(model, tokens)[0, -1]
    predicted = int(clean.argmax())
    expected = {m: torch.zeros(tokens.shape[1]) for m in ("l1", "kl", "logit_drop", "logprob_drop")}
    for c in range(1, tokens.shape[1]):
        t = tokens.clone()
        t[0, c] = pad
        new = logits(model, t)[0, -1]
        lp, lq = clean.log_softmax(-1), new.log_softmax(-1)
        expected["l1"][c] = (new - clean).abs().sum()
        expected["kl"][c] = (lp.exp() * (lp - lq)).sum()
        expected["logit_drop"][c] = clean[predicted] - new[predicted]
        expected["logprob_drop"][c] = lp[predicted] - lq[predicted]
    for metric, values in expected.items():
        result = attribute(model, PROMPT, method="occlusion", metric=metric, normalize="none", progress=False)
        assert_close(result.raw_scores, values, atol=1e-4 if metric != "kl" else 1e-6)
        assert result.raw_scores[0] == 0 and not result.attributed[0]
        assert result.predicted_token_id == predicted


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_vector_baselines_equal_naive_loop(gpt2, baseline):
    tokens = tokens_of(gpt2)
    W_E = gpt2.W_E.detach()
    vector = torch.zeros(W_E.shape[1]) if baseline == "zero" else W_E.mean(0)
    clean = logits(gpt2, tokens)[0, -1]
    expected = torch.zeros(tokens.shape[1])
    for c in range(1, tokens.shape[1]):
        embeds = W_E[tokens].clone()
        embeds[0, c] = vector
        expected[c] = (logits(gpt2, tokens, embeds)[0, -1] - clean).abs().sum()
    result = attribute(
        gpt2, PROMPT, method="occlusion", baseline=baseline, normalize="none", batch_size=4, progress=False
    )
    assert_close(result.raw_scores, expected, atol=1e-4)


def test_target_hook_occlusion_equals_naive_l1(llama):
    name = "blocks.0.hook_resid_post"
    tokens = tokens_of(llama)
    clean = activation(llama, tokens, name)[0, 3:, :20]
    expected = torch.zeros(tokens.shape[1])
    for c in range(1, tokens.shape[1]):
        t = tokens.clone()
        t[0, c] = 7
        expected[c] = (activation(llama, t, name)[0, 3:, :20] - clean).abs().sum()
    result = attribute(
        llama, PROMPT, method="occlusion", target=f"{name}[:, 3:, :20]", baseline=7, normalize="none", progress=False
    )
    assert_close(result.raw_scores, expected, atol=1e-4)


def test_window_is_mean_of_covering_windows(gpt2):
    one = attribute(gpt2, PROMPT, method="occlusion", normalize="none", progress=False)
    tokens = tokens_of(gpt2)
    n = tokens.shape[1]
    pad = gpt2.tokenizer.pad_token_id
    clean = logits(gpt2, tokens)[0, -1]
    span = torch.zeros(n)
    for c in range(1, n):
        t = tokens.clone()
        t[0, c : c + 2] = pad
        span[c] = (logits(gpt2, t)[0, -1] - clean).abs().sum()
    expected = torch.zeros(n)
    expected[1] = span[1]
    expected[2:] = (span[1:-1] + span[2:]) / 2
    two = attribute(gpt2, PROMPT, method="occlusion", window=2, normalize="none", progress=False)
    assert_close(two.raw_scores, expected, atol=1e-4)
    assert not torch.allclose(one.raw_scores, two.raw_scores)


def test_per_output_matrix_rows_and_causality(gpt2):
    tokens = tokens_of(gpt2, "The cat sat on")
    n = tokens.shape[1]
    pad = gpt2.tokenizer.pad_token_id
    clean = logits(gpt2, tokens)[0]
    expected = torch.zeros(n, n)
    for c in range(1, n):
        t = tokens.clone()
        t[0, c] = pad
        expected[:, c] = (logits(gpt2, t)[0] - clean).abs().sum(-1)
    result = attribute(gpt2, "The cat sat on", method="occlusion", per_output=True, normalize="none", progress=False)
    assert_close(result.raw_matrix, expected, atol=1e-4)
    assert result.output_positions == list(range(n))
    assert_close(result.raw_scores, result.raw_matrix[-1])
    assert result.raw_matrix.triu(1).abs().max() < 1e-4  # occluding c never changes outputs before c


def test_chunk_size_does_not_change_scores(llama):
    a = attribute(llama, PROMPT, method="occlusion", batch_size=1, normalize="none", progress=False)
    b = attribute(llama, PROMPT, method="occlusion", batch_size=5, normalize="none", progress=False)
    assert_close(a.raw_scores, b.raw_scores, atol=1e-4)


@pytest.mark.parametrize("name", ["gpt2-hf", "llama-hf"])
def test_prefix_reuse_equals_full_recompute(name):
    from fixture_models import build

    model = build(name)
    prompt = "The sky is blue. The grass is green and"
    for options in (
        dict(per_output=True, metric="kl"),
        dict(target="blocks.0.hook_resid_post[:, 3:, :20]", baseline="mean", window=3),
        dict(objective=lambda logits: logits[:, -2].softmax(-1)[:, :4], include_bos=True, batch_size=2),
    ):
        cached = attribute(
            model, prompt, method="occlusion", reuse="cache", normalize="none", progress=False, **options
        )
        full = attribute(
            model, prompt, method="occlusion", reuse="recompute", normalize="none", progress=False, **options
        )
        assert_close(cached.raw_scores, full.raw_scores, atol=1e-5)
        if cached.raw_matrix is not None:
            assert_close(cached.raw_matrix, full.raw_matrix, atol=1e-5)


def test_cache_reuse_needs_a_cache(llama):
    import lens_inversion as li

    with pytest.raises(li.OptionError, match="reuse='cache' needs"):
        attribute(llama, PROMPT, method="occlusion", reuse="cache", progress=False)
