import warnings

import numpy as np

from lens_inversion.hooks.global_state import Settings, unchanged


def test_numpy_stream_restored_with_a_non_mt19937_bit_generator():
    # The legacy tuple state exists for MT19937 only; with another bit generator the
    # snapshot used to fail (KeyError) on every public call.
    saved = np.random.get_state(legacy=False)
    try:
        np.random.set_bit_generator(np.random.PCG64(1))
        before = Settings.now()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "legacy get_state" RuntimeWarning either
            with unchanged():
                np.random.rand(3)
        assert before.differences(Settings.now()) == []
        first = np.random.rand()
        np.random.set_bit_generator(np.random.PCG64(1))
        assert first == np.random.rand()  # the draw inside `unchanged` left the stream untouched
    finally:
        np.random.set_bit_generator(np.random.MT19937())
        np.random.set_state(saved)


def test_numpy_change_is_seen():
    before = Settings.now()
    state = np.random.get_state(legacy=False)
    np.random.rand()
    assert "NumPy RNG" in before.differences(Settings.now())
    np.random.set_state(state)
    assert before.differences(Settings.now()) == []
