"""Old spellings keep working for one release, warn with the new name, and refuse both at once."""

import inspect
import warnings

import pytest

from lens_inversion.deprecation import Rename, invert_bool, renamed_field, renamed_options
from lens_inversion.errors import OptionError


@renamed_options(scan_batch="batch_size", fix_bos=Rename("include_bos", invert_bool))
def _example(prompt, /, *, batch_size: int = 8, include_bos: bool = False):
    return batch_size, include_bos


def test_new_spelling_is_silent_and_signature_is_new():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _example("x", batch_size=3) == (3, False)
    assert list(inspect.signature(_example).parameters) == ["prompt", "batch_size", "include_bos"]


def test_old_spelling_warns_naming_the_new_and_converts():
    with pytest.warns(DeprecationWarning, match="'scan_batch' is renamed 'batch_size'"):
        assert _example("x", scan_batch=5) == (5, False)
    with pytest.warns(DeprecationWarning, match="'fix_bos' is renamed 'include_bos'"):
        assert _example("x", fix_bos=False) == (8, True)


def test_both_spellings_is_an_option_error():
    with pytest.raises(OptionError, match="batch_size"):
        _example("x", scan_batch=5, batch_size=4)


def test_renamed_field_warns_and_forwards():
    class Result:
        normalize = "max_abs"
        normalisation = renamed_field("normalisation", "normalize")

    with pytest.warns(DeprecationWarning, match="'normalisation' is renamed 'normalize'"):
        assert Result().normalisation == "max_abs"
