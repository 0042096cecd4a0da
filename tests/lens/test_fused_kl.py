"""The tuned-lens training loss's fused KL against the reference `metrics.kl_divergence`."""

import torch

from lens_inversion import metrics
from lens_inversion.lens.tuned_training import _Distill


def _logits(seed: int, shape=(3, 5, 17)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_fused_kl_value_matches_metrics():
    final, z = _logits(0), _logits(1)
    fused = _Distill(final).kl_sum(z)
    torch.testing.assert_close(fused, metrics.kl_divergence(final, z).sum(), rtol=1e-5, atol=1e-5)


def test_fused_kl_gradient_matches_autograd_of_metrics():
    final = _logits(2)
    z1 = _logits(3).requires_grad_()
    z2 = z1.detach().clone().requires_grad_()
    _Distill(final).kl_sum(z1).backward()
    metrics.kl_divergence(final, z2).sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-5, atol=1e-6)


def test_fused_kl_of_a_distribution_with_itself_is_zero():
    final = _logits(4)
    assert abs(float(_Distill(final).kl_sum(final.clone()))) < 1e-4
