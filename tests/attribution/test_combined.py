"""Combined scores follow the documented formula; agreement is Spearman's ρ."""

import numpy as np
import pytest
import torch
from _tolerances import assert_close
from attribution_refs import PROMPT

from lens_inversion.attribution import attribute


def spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.2, 1.5)])
def test_combined_equals_formula(gpt2, weights):
    g = attribute(gpt2, PROMPT, method="grad_x_input", normalize="none", progress=False).raw_scores
    o = attribute(gpt2, PROMPT, method="occlusion", normalize="none", progress=False).raw_scores
    both = attribute(gpt2, PROMPT, method="combined", weights=weights, normalize="none", progress=False)
    expected = weights[0] * g / g.abs().max() + weights[1] * o / o.abs().max()
    assert_close(both.raw_scores, expected, atol=1e-5)
    assert_close(both.scores, expected)
    assert_close(both.components["grad_x_input"], g / g.abs().max())
    assert_close(both.components["occlusion"], o / o.abs().max(), atol=1e-5)
    assert both.agreement == pytest.approx(spearman(g[1:].numpy(), o[1:].numpy()), abs=1e-6)
    normalised = attribute(gpt2, PROMPT, method="combined", weights=weights, progress=False)
    assert_close(normalised.scores, expected / expected.abs().max(), atol=1e-5)


def test_combined_per_output_matrix(llama):
    g = attribute(llama, "The cat sat", method="grad_x_input", per_output=True, normalize="none", progress=False)
    o = attribute(llama, "The cat sat", method="occlusion", per_output=True, normalize="none", progress=False)
    both = attribute(llama, "The cat sat", method="combined", per_output=True, normalize="none", progress=False)
    gm, om = g.raw_matrix, o.raw_matrix
    safe = lambda m: m / torch.where(m.abs().amax(-1, keepdim=True) > 0, m.abs().amax(-1, keepdim=True), 1)  # noqa: E731
    assert_close(both.raw_matrix, 0.5 * safe(gm) + 0.5 * safe(om), atol=1e-5)
    fig = both.plot()
    assert fig.data[0].type == "heatmap" and np.array(fig.data[0].z).shape == tuple(both.matrix.shape)
