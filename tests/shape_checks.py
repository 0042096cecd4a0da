"""The run-time checker the test suite wraps every lens_inversion function with.

pyproject's addopts pass `--jaxtyping-packages=lens_inversion,shape_checks.checked`: jaxtyping's
import hook decorates each function and dataclass of the package with `jaxtyped(typechecker=checked)`
(shapes and dtypes of `Float[Tensor, "..."]` annotations included). `checked` is beartype with
PEP 484's numeric tower (an `int` is a valid `float`), and one rule for where parameters are checked:

- a call between our own modules must match the callee's annotations, and every return value
  must match its annotation, wherever the call came from;
  (the pass-through decorators `preserves_model` and `renamed_options` do not count as callers)
- arguments that come from outside lens_inversion (a user, a test) are validated by the public
  function itself, which answers a wrong value with our `OptionError` naming the choices (the
  reliability tests pass wrong values on purpose); a type violation there is not raised.
"""

import random
import sys

import beartype
from beartype.roar import BeartypeCallHintParamViolation

_CONF = beartype.BeartypeConf(is_pep484_tower=True)
# frames that are not the caller: the checkers, and our decorators that pass a call through
# (`preserves_model`'s wrapper calls the function it wraps; `renamed_options` translates keywords)
_MACHINERY = ("jaxtyping", "beartype", "functools", "contextlib", __name__, "lens_inversion.hooks.preserve", "lens_inversion.deprecation")


def _caller_is_ours() -> bool:
    """Whether the first frame outside jaxtyping/beartype (the caller of the checked function) is ours."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(_MACHINERY):
            return name == "lens_inversion" or name.startswith("lens_inversion.")
        frame = frame.f_back
    return False


def _raised_inside(error: BaseException, code) -> bool:
    """Whether `error` came from inside the body of the function with this code (a deeper call of ours)."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def checked(function, *args, **kwargs):
    """beartype `function` (numeric tower on); a caller outside the package gets the function's own validation."""
    inner = beartype.beartype(function, conf=_CONF)
    if inner is function:
        return function

    code = getattr(function, "__code__", None)

    def guarded(*call_args, **call_kwargs):
        state = random.getstate()  # beartype samples container items with `random`: the
        try:  # tests check that our calls leave the Python generator untouched
            return inner(*call_args, **call_kwargs)
        except BeartypeCallHintParamViolation as violation:
            if _caller_is_ours() or _raised_inside(violation, code):
                raise
        finally:
            random.setstate(state)
        return function(*call_args, **call_kwargs)  # a value from outside: the function's own validation answers

    for attr in ("__name__", "__qualname__", "__module__", "__doc__", "__wrapped__"):
        if hasattr(inner, attr):
            try:
                setattr(guarded, attr, getattr(inner, attr))
            except (AttributeError, TypeError):
                pass
    return guarded
