"""The run-time checker `make test-strict` wraps every lens_inversion function with.

`make test-strict` passes `--jaxtyping-packages=lens_inversion,shape_checks.checked`: jaxtyping's
import hook decorates each function and dataclass of the package with `jaxtyped(typechecker=checked)`,
so the shapes and dtypes of `Float[Tensor, "..."]` annotations are checked on every call. `checked`
is beartype with PEP 484's numeric tower (an `int` is a valid `float`) and one rule:

- every parameter and every return value must match its annotation;
- except that a wrong argument may reach a function that answers it itself: run unchecked, the
  function must raise one of our typed errors (`LensInversionError`: an OptionError naming the
  valid choices, a TargetError, ...), and that error is what the caller gets. This is how public
  entry points treat a user's wrong value (the reliability tests pass such values on purpose).
  If the function does not answer with our error, the type violation is raised.
- plan objects built from raw values and checked afterwards (`validation.validates_own_arguments`)
  are not checked on construction.
"""

import functools
import inspect
import random
import sys

import beartype
import jaxtyping
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
        except BeartypeCallHintParamViolation as violation:
            if _marked(*where):
                return None  # the stand-in returns nothing; jaxtyping then runs the real function
            _answer_or_raise(violation, where, call_args, call_kwargs)
        finally:
            random.setstate(state)

    return guarded


def _answer_or_raise(violation: Exception, where: tuple[str, str], args: tuple, kwargs: dict) -> None:
    """Raise the typed error the real function answers these arguments with, else the violation."""
    from lens_inversion.errors import LensInversionError

    found = _resolve(*where)
    if found is None:  # a nested function or a lambda: nothing to run it as
        raise violation
    real = inspect.unwrap(found)  # jaxtyping's decorator is the innermost: this is the unchecked body
    try:  # (the calls it makes are still checked)
        real(*args, **kwargs)
    except LensInversionError as answer:
        raise _passed_through(answer) from None
    except Exception:
        raise violation from None
    raise violation


def _passed_through(error: Exception) -> Exception:
    """`error` as an instance of its own class that jaxtyping re-raises untouched (an AnnotationError too).

    jaxtyping turns any other exception from its parameter check into a TypeCheckError; the caller must
    get our typed error itself (`pytest.raises(OptionError)` still matches, the message is the same).
    """
    kind = _pass_through_class(type(error))
    copy = kind.__new__(kind)
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy


@functools.cache
def _pass_through_class(kind: type) -> type:
    return type(kind.__name__, (kind, jaxtyping.AnnotationError), {"__module__": kind.__module__, "__qualname__": kind.__qualname__})


@functools.cache
def _marked(module: str, qualname: str) -> bool:
    """Whether `module.qualname` is the __init__ of a class marked with `validates_own_arguments`."""
    owner, _, name = qualname.rpartition(".")
    return name == "__init__" and getattr(_resolve(module, owner), "__validates_own_arguments__", False)


def _resolve(module: str, qualname: str):
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj
