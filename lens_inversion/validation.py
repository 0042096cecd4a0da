"""One place that checks option values before any computation runs.

Every check raises `OptionError` with a message in three parts: what is wrong, the value
received (its repr), and what is valid. Types are checked strictly: a boolean option takes
only `True` or `False` (no truthy strings or 0/1), an integer option takes an `int` (not a
bool or a float), a number option takes a finite real number (not a bool, NaN or inf).
"""

import math
import os
import tempfile
from pathlib import Path
from typing import TypeGuard, TypeVar

from .errors import OptionError, PromptError

F = TypeVar("F")

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
INT_MAX = 2**63 - 1  # any integer option: torch and C loops take signed 64-bit counts


def validates_own_arguments(obj: "F") -> "F":
    """Mark a function (or a class, for its __init__) that checks its own arguments with our typed errors.

    Its annotations say what is valid; a wrong value is still answered by its own check (naming the
    choices), not by a run-time type checker: the test suite's checker (tests/shape_checks.py) reads the mark.
    """
    setattr(obj, "__validates_own_arguments__", True)  # noqa: B010 (a mark on any object, typed or not)
    return obj


def _is_one_of(value: object, choices: tuple) -> bool:
    for choice in choices:
        if value is choice:
            return True
        if isinstance(value, bool) or isinstance(choice, bool) or not isinstance(value, type(choice)):
            continue
        try:
            if bool(value == choice):
                return True
        except Exception:  # an object whose == is not a plain truth value (a tensor, an array)
            continue
    return False


def check_choice(name: str, value: object, choices: tuple) -> None:
    """Raise OptionError unless `value` is one of `choices` (of the same type), naming all of them."""
    if not _is_one_of(value, choices):
        valid = ", ".join(repr(c) for c in choices)
        raise OptionError(f"{name}={value!r} is not valid; choose one of: {valid}.")


def check_bool(name: str, value: object, *, allow_none: bool = False) -> None:
    """Raise OptionError unless `value` is True or False (or None when allowed): no truthy stand-ins."""
    choices = (True, False, None) if allow_none else (True, False)
    if not _is_one_of(value, choices):
        allowed = "True, False or None" if allow_none else "True or False"
        listed = ", ".join(repr(c) for c in choices)
        raise OptionError(f"{name}={value!r} is not valid; choose one of: {listed} ({name} must be {allowed}).")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_range(low: int | None, high: int | None) -> str:
    if low == 1 and high is None:
        return "a positive integer"
    if low == 0 and high is None:
        return "an integer >= 0"
    if high is None:
        return "an integer" if low is None else f"an integer >= {low}"
    return f"an integer <= {high}" if low is None else f"an integer in {low}..{high}"


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> None:
    """Raise OptionError unless `value` is an int (not a bool or float) in low..high (inclusive)."""
    if value is None and allow_none:
        return
    high = INT_MAX if high is None else high
    if _is_int(value) and (low is None or value >= low) and value <= high:
        return
    valid = _int_range(low, None if high == INT_MAX else high)
    if _is_int(value) and value > INT_MAX:
        valid += " that fits in 64 bits (at most 2**63 - 1)"
    raise OptionError(f"{name} must be {valid}{' or None' if allow_none else ''}; got {value!r}.")


def check_seed(value: object, *, name: str = "seed", allow_none: bool = True) -> None:
    """Raise OptionError unless `value` is an int seed in [0, 2**63 - 1] (or None when allowed)."""
    if value is None and allow_none:
        return
    if _is_int(value) and 0 <= value <= SEED_MAX:
        return
    valid = "an integer in [0, 2**63 - 1]" + (" or None" if allow_none else "")
    raise OptionError(f"{name}={value!r} is not valid; give {valid}.")


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def _in_bounds(value: float, low, high, low_open: bool, high_open: bool) -> bool:
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False,
                 none_means: str = "") -> None:
    """Raise OptionError unless `value` is a finite real number (not a bool) within the bounds.

    `low_open`/`high_open` exclude the bound itself; `none_means` explains what None selects.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        real = ok = False
    else:
        real, ok = True, abs(value) <= INT_MAX
        if ok and _in_bounds(float(value), low, high, low_open, high_open):
            return
    alt = "" if not allow_none else (f" or None ({none_means})" if none_means else " or None")
    size = " of magnitude at most 2**63 - 1" if real and not ok else ""
    raise OptionError(f"{name} must be a finite number{size}{_bounds(low, high, low_open, high_open)}{alt}; got {value!r}.")


def check_int_list(name: str, value: object, *, low: int | None = None, high: int | None = None) -> list[int]:
    """A non-empty list, tuple or range of ints (not bools) in low..high, as a list; else OptionError."""
    items = list(value) if isinstance(value, (list, tuple, range)) else None
    if items and all(_is_int(v) and (low is None or v >= low) and (high is None or v <= high) for v in items):
        return items
    valid = f"integers in [{low}, {high}]" if low is not None and high is not None else _int_range(low, high)
    raise OptionError(f"{name} must be a non-empty list of {valid}; got {value!r}.")


def check_used_by(choice_name: str, choice: str, used_by: dict[str, tuple[str, ...]], **options: object) -> None:
    """An option the chosen mode ignores is an OptionError, not silently dropped.

    `used_by` maps each option name to the values of `choice_name` that use it; options
    given as None are not checked.
    """
    for name, value in options.items():
        if value is not None and choice not in used_by[name]:
            users = " or ".join(repr(a) for a in used_by[name])
            raise OptionError(
                f"{name}= applies only to {choice_name}={users}; got {name}={value!r} with {choice_name}={choice!r}."
            )


def check_one_of_options(function: str, **options: object) -> None:
    """At most one of the given options may be set (not None); else OptionError naming them."""
    given = [name for name, value in options.items() if value is not None]
    if len(given) > 1:
        names = ", ".join(f"{n}=" for n in options)
        raise OptionError(f"{function}() takes one of {names}; got {', '.join(g + '=' for g in given)}.")


def check_text(name: str, value: object, *, allow_none: bool = False) -> None:
    """Raise OptionError unless `value` is a str (or None when allowed)."""
    if isinstance(value, str) or (value is None and allow_none):
        return
    valid = "a string or None" if allow_none else "a string"
    raise OptionError(f"{name} must be {valid}; got {type(value).__name__} {value!r}.")


def check_destination(path: object, *, name: str = "path", example: str = "out.html") -> Path:
    """Check that `path` names a file we can write, before anything is computed; return it as a Path.

    It must be a str or os.PathLike, not a directory, in an existing folder, and writable: we
    open it for appending (or create it and remove it again), so nothing existing is changed,
    and every rank of a distributed job may check the same path at the same time.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
        raise OptionError(f"{name} must be a file path (a non-empty str or pathlib.Path) such as "
                          f"{example!r}; got {type(path).__name__} {path!r}.")
    out = Path(path)
    where = f"{name}={str(out)!r}"
    if out.is_dir():
        raise OptionError(f"Cannot write to {where}: it is a directory; give a file path inside it, "
                          f"such as {str(out / example)!r}.")
    folder = out.parent
    if not folder.is_dir():
        raise OptionError(f"Cannot write to {where}: the folder {str(folder)!r} does not exist; "
                          "create it first or give a path in an existing, writable folder.")
    reason = _cannot_write(out)
    if reason:
        raise OptionError(f"Cannot write to {where}: {reason}; give a path in an existing folder you may write to.")
    return out


def _cannot_write(path: Path) -> str | None:
    """Why `path` cannot be written, or None: a real attempt that changes nothing.

    It is safe when several processes (the ranks of one torchrun job) check the same path at
    once: an existing file is opened for appending, never created; a missing one is created
    exclusively and removed, so a process removes only the probe it made.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except FileNotFoundError:
        return _cannot_create(path)
    except OSError as error:
        return _reason(error)
    return None


def _cannot_create(path: Path) -> str | None:
    """Why a missing `path` cannot be created, or None (if a peer's probe appears first: the folder's)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return _cannot_write_in(path.parent)
    except OSError as error:
        return _reason(error)
    path.unlink(missing_ok=True)
    return None


def _cannot_write_in(folder: Path) -> str | None:
    """Why no new file can be written in `folder`, or None (a uniquely named probe, then removed)."""
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError as error:
        return _reason(error)
    os.close(handle)
    os.unlink(probe)
    return None


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _lone_surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"{text[error.start]!r} at character {error.start}"
    return None


def check_prompt_text(prompt: object) -> None:
    """Raise PromptError when a prompt string (or an entry of a list of them) is not valid Unicode."""
    texts = [prompt] if isinstance(prompt, str) else (list(prompt) if isinstance(prompt, (list, tuple)) else [])
    for i, text in enumerate(texts):
        bad = _lone_surrogate(text) if isinstance(text, str) else None
        if bad:
            which = "The prompt" if isinstance(prompt, str) else f"Prompt {i} of the batch"
            raise PromptError(
                f"{which} {text[:40]!r} holds a lone surrogate {bad}, which is not valid Unicode; "
                "give valid text (for example text.encode('utf-8', 'replace').decode())."
            )


def read_prompt(adapter, prompt, **options):
    """`adapter.prompt(prompt)` with clear errors: invalid Unicode, and which batch entry is too long."""
    check_prompt_text(prompt)
    try:
        return adapter.prompt(prompt, **options)
    except PromptError as error:
        if isinstance(prompt, (list, tuple)) and len(prompt) > 1 and "n_ctx" in str(error):
            raise PromptError(_too_long(adapter, prompt, options.get("prepend_bos", True))) from None
        raise


def _too_long(adapter, prompts, prepend_bos: bool) -> str:
    lengths = [len(adapter._encode(p, prepend_bos)) for p in prompts]
    long = [i for i, n in enumerate(lengths) if n > adapter.n_ctx]
    first = long[0]
    return (
        f"Prompt {first} of the batch of {len(prompts)} has {lengths[first]} tokens but the model's context "
        f"(n_ctx) is {adapter.n_ctx}; too long: entries {long}. Shorten them to at most {adapter.n_ctx} tokens."
    )


__all__ = [
    "SEED_MAX",
    "check_bool",
    "check_choice",
    "check_destination",
    "check_int",
    "check_int_list",
    "check_one_of_options",
    "check_used_by",
    "check_number",
    "check_seed",
    "check_prompt_text",
    "check_text",
    "read_prompt",
]
