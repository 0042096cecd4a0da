"""The run-time checker the test suite wraps every lens_inversion function with.

pyproject's addopts pass `--jaxtyping-packages=lens_inversion,shape_checks.checked`: jaxtyping's
import hook decorates each function and dataclass of the package with `jaxtyped(typechecker=checked)`,
so the shapes and dtypes of `Float[Tensor, "..."]` annotations are checked on every call. `checked`
is beartype with PEP 484's numeric tower (an `int` is a valid `float`) and one rule:

- every parameter and every return value must match its annotation, except
- the parameters of a function that validates its own arguments: a public entry point (exported
  by `lens_inversion`, or a public method of an exported class) or one marked with
  `validation.validates_own_arguments`. A wrong value there is the user's, and the function's own
  check must answer it with our typed error naming the valid choices (the reliability tests pass
  such values on purpose); beartype's message would hide that answer.
"""

import functools
import inspect
import random
import sys

import beartype
from beartype.roar import BeartypeCallHintParamViolation

_CONF = beartype.BeartypeConf(is_pep484_tower=True)


def checked(function, *args, **kwargs):
    """beartype `function` (numeric tower on); self-validating functions answer wrong arguments themselves."""
    inner = beartype.beartype(function, conf=_CONF)
    if inner is function:
        return function
    where = (function.__module__, function.__qualname__)  # jaxtyping's checking stand-in is named as the real one

    @functools.wraps(inner)
    def guarded(*call_args, **call_kwargs):
        state = random.getstate()  # beartype samples container items with `random`: the
        try:  # tests check that our calls leave the Python generator untouched
            return inner(*call_args, **call_kwargs)
        except BeartypeCallHintParamViolation:
            if not _validates_own_arguments(*where):
                raise
        finally:
            random.setstate(state)
        return function(*call_args, **call_kwargs)  # the stand-in, unchecked; then the real function runs

    return guarded


@functools.cache
def _validates_own_arguments(module: str, qualname: str) -> bool:
    """Whether the function `module.qualname` is a public entry point or marked as validating its arguments."""
    owner, _, name = qualname.rpartition(".")
    obj = _resolve(module, qualname)
    cls = _resolve(module, owner) if owner else None
    if getattr(obj, "__validates_own_arguments__", False) or (name == "__init__" and getattr(cls, "__validates_own_arguments__", False)):
        return True
    return (module, qualname) in _entry_points()


def _resolve(module: str, qualname: str):
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


@functools.cache
def _entry_points() -> frozenset[tuple[str, str]]:
    """(module, qualname) of every exported function and every public method (and __init__) of an exported class."""
    import lens_inversion

    found = set()
    for name in lens_inversion.__all__:
        obj = getattr(lens_inversion, name)
        members = [obj] if not inspect.isclass(obj) else [
            m for attr, m in vars(obj).items() if callable(m) and (not attr.startswith("_") or attr == "__init__")
        ] + [getattr(m, "__func__", None) for m in vars(obj).values() if isinstance(m, (classmethod, staticmethod))]
        for member in members:
            if member is not None:
                found.add((member.__module__, inspect.unwrap(member).__qualname__))
    return frozenset(found)
