"""AblationResult.plot(log=True): log10 colours, raw values in the hover data, negatives refused."""

import numpy as np
import pytest
import torch

import lens_inversion as li
from lens_inversion.ablation import AblationResult


def _result(values):
    values = torch.tensor(values, dtype=torch.float32)
    return AblationResult(values=values, layers=list(range(values.shape[0])), columns=list(range(values.shape[1])),
                          kind="positions", metric="kl", ablation="zero", site="resid_post", clean=0.0,
                          str_tokens=[f"t{i}" for i in range(values.shape[1])], readout=values.shape[1] - 1)


def test_log_colours_are_log10_of_the_values_floored_at_max_over_1e4():
    values = [[0.0, 1e-3, 0.5], [2.0, 1e-9, 8.0]]
    heatmap = _result(values).plot(log=True).data[0]
    expected = np.log10(np.clip(np.array(values), 8.0 / 1e4, None))
    np.testing.assert_allclose(np.array(heatmap.z, dtype=float), expected, rtol=1e-6)
    np.testing.assert_allclose(np.array(heatmap.customdata, dtype=float), np.array(values), rtol=1e-6)
    assert "log" in heatmap.colorbar.title.text


def test_linear_plot_keeps_raw_values():
    values = [[0.0, 0.25], [1.0, 3.0]]
    heatmap = _result(values).plot().data[0]
    np.testing.assert_allclose(np.array(heatmap.z, dtype=float), np.array(values))


def test_log_plot_refuses_negative_values():
    with pytest.raises(li.OptionError, match=r"non-negative.*-0\.5"):
        _result([[1.0, -0.5]]).plot(log=True)
