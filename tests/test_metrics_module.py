"""The one metrics module against torch's own functions and a naive loop."""

import pytest
import torch
import torch.nn.functional as F

from lens_inversion import metrics


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, 50, generator=g) * 4, torch.randn(3, 4, 50, generator=g) * 4


def test_kl_matches_torch_kl_div(logits):
    ref, other = logits
    expected = F.kl_div(F.log_softmax(other, -1), F.log_softmax(ref, -1), log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(metrics.kl_divergence(ref, other), expected, rtol=1e-5, atol=1e-6)
    assert float(metrics.kl_divergence(ref, ref).abs().max()) < 1e-5


def test_entropy_cross_entropy_probability(logits):
    ref, _ = logits
    tokens = torch.arange(12).reshape(3, 4) % 50
    p = ref.softmax(-1)
    torch.testing.assert_close(metrics.entropy(ref), -(p * p.log()).sum(-1), rtol=1e-5, atol=1e-6)
    ce = F.cross_entropy(ref.flatten(0, 1), tokens.flatten(), reduction="none").reshape(3, 4)
    torch.testing.assert_close(metrics.cross_entropy(ref, tokens), ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics.probability(ref, tokens), p.gather(-1, tokens[..., None])[..., 0])


def test_rank_counts_strictly_higher_logits(logits):
    ref, _ = logits
    tokens = torch.tensor([[0, 7, 13, 49]] * 3)
    for i in range(3):
        for j in range(4):
            naive = 1 + sum(int(ref[i, j, v] > ref[i, j, tokens[i, j]]) for v in range(50))
            assert int(metrics.rank(ref, tokens)[i, j]) == naive
            assert int(metrics.cell_rank(ref, tokens)[i, j]) == naive


def test_half_precision_is_widened():
    ref = (torch.randn(2, 30) * 8).half()
    assert metrics.kl_divergence(ref, ref.flip(-1)).dtype == torch.float32


def test_fused_kl_equals_plain_kl(logits):
    ref, other = logits
    ref_norm, _, ref_centred = metrics.normalize(ref[0])
    norm, _, centred = metrics.normalize(other[0][None])
    fused = metrics.kl_from_centred(metrics.softmax(ref[0], ref_norm), ref_centred, ref_norm, centred, norm)
    torch.testing.assert_close(fused[0], metrics.kl_divergence(ref[0], other[0]), rtol=1e-4, atol=1e-5)


def test_expectation_keeps_float64_accuracy_on_a_wide_vocabulary():
    """Σ p (z − m) on 4,096 tokens, where p sits ~22 nats below the maximum (as the embedding row's
    KL does on the embedded model): within 2e-5 of float64 per cell. A batched-matmul einsum misses
    this (1.4e-4 here); the benchmark's check of evaluate_lens against a stacked loop caught it."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 4096, generator=g) * 6
    p = (torch.randn(512, 4096, generator=g) * 3).softmax(-1)
    centred = z - z.amax(-1, keepdim=True)
    exact = (p.double() * centred.double()).sum(-1)
    assert float(exact.mean()) < -15
    assert float((metrics.expectation(p, centred).double() - exact).abs().max()) < 2e-5
    _, entropy, _ = metrics.normalize(z)
    q = z.double().softmax(-1)
    assert float((entropy.double() + (q * q.log()).sum(-1)).abs().max()) < 2e-5
