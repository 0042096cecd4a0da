"""A log colour scale tolerates float32 rounding below zero, at any magnitude, and refuses real negatives."""

import numpy as np
import pytest

from lens_inversion import OptionError
from lens_inversion.viz.heatmap import log_color_values


@pytest.mark.parametrize("top", [10.0, 0.03, 1e-4])
def test_rounding_negatives_are_coloured_as_the_floor(top):
    values = np.array([[top, top / 2], [-2e-6, 0.0]], dtype=np.float32)  # -2e-6: float32 KL of equal rows
    z, ticks, labels = log_color_values(values)
    floor = np.log10(np.float32(top) / 1e4)
    assert z[1, 0] == pytest.approx(floor) and z[1, 1] == pytest.approx(floor)
    assert z[0, 0] == pytest.approx(np.log10(top), rel=1e-6)
    assert ticks and len(ticks) == len(labels)


def test_a_real_negative_value_is_refused():
    with pytest.raises(OptionError, match="non-negative.*-0.5"):
        log_color_values(np.array([[1.0, -0.5]]))
