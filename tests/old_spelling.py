"""For tests that use an old option spelling on purpose: its DeprecationWarning is expected there.

Elsewhere the suite turns that warning into an error (pyproject's filterwarnings), so a test that
slipped back to an old spelling fails; tests/test_deprecation.py checks the warnings themselves.
"""

import contextlib
import functools
import warnings


@contextlib.contextmanager
def old_spelling():
    """A block whose renamed-option warnings are expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"The (option|field|metric) .* is renamed", DeprecationWarning)
        yield


def with_old_spelling(call):
    """`call`, run inside `old_spelling()`."""

    @functools.wraps(call)
    def run(*args, **kwargs):
        with old_spelling():
            return call(*args, **kwargs)

    return run
