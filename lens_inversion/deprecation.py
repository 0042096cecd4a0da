"""Old option and field spellings kept working for one release, with a warning naming the new one.

`renamed_options` wraps a public function: a call with an old keyword is translated to the
new keyword (through a converter where the meaning flipped, e.g. `fix_bos=True` →
`include_bos=False`) and warns with `DeprecationWarning`; giving both spellings is an
`OptionError`. `help()` and `inspect.signature` show only the new signature.
`renamed_field` is the same for an attribute of a result class.
"""

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from .callsite import user_stacklevel
from .errors import OptionError

REMOVED_IN = "0.3"  # the release that drops the old spellings


class Rename(NamedTuple):
    """One old keyword: its new name and how to convert an old value to the new meaning."""

    new: str
    convert: Callable[[Any], Any] | None = None
    note: str = ""


def _as_rename(value: "str | Rename") -> Rename:
    return Rename(value) if isinstance(value, str) else value


def warn_renamed(old: str, new: str, *, what: str = "option", note: str = "") -> None:
    """Warn that `old` is spelled `new` now (DeprecationWarning, attributed to the user's line)."""
    extra = f" ({note})" if note else ""
    warnings.warn(
        f"The {what} {old!r} is renamed {new!r}{extra}; {old!r} stops working in lens_inversion {REMOVED_IN}.",
        DeprecationWarning,
        stacklevel=user_stacklevel(),
    )


def translate(function_name: str, kwargs: dict, renames: "dict[str, str | Rename]") -> dict:
    """`kwargs` with every old keyword replaced by its new one (warned); both spellings is an error."""
    out = dict(kwargs)
    for old, spec in renames.items():
        if old not in out:
            continue
        rename = _as_rename(spec)
        if rename.new in out:
            raise OptionError(f"{function_name}() got both {old}= (old spelling) and {rename.new}=; give only {rename.new}=.")
        value = out.pop(old)
        out[rename.new] = rename.convert(value) if rename.convert else value
        warn_renamed(old, rename.new, note=rename.note)
    return out


def renamed_options(**renames: "str | Rename") -> Callable:
    """Decorator: accept the old keyword spellings in `renames` (old=new) with a DeprecationWarning."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            return function(*args, **translate(function.__name__, kwargs, renames))

        # a function attribute, read by docs/glossary.py
        wrapper.__renamed_options__ = {old: _as_rename(spec).new for old, spec in renames.items()}  # type: ignore[attr-defined]
        return wrapper

    return decorate


def translate_values(kwargs: dict, renames: "dict[str, dict[str, str]]") -> dict:
    """`kwargs` with every old spelling of a value (option={old: new}) replaced by the new one (warned)."""
    out = dict(kwargs)
    for option, spellings in renames.items():
        value = out.get(option)
        if isinstance(value, str) and value in spellings:
            warn_renamed(value, spellings[value], what=option)
            out[option] = spellings[value]
    return out


def renamed_values(**renames: "dict[str, str]") -> Callable:
    """Decorator: accept old spellings of option values (option={old: new}) with a DeprecationWarning.

    The value is translated before the function is entered, so its annotations and checks see
    only the current spelling.
    """

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            return function(*args, **translate_values(kwargs, renames))

        return wrapper

    return decorate


def renamed_field(old: str, new: str) -> property:
    """A read-only property `old` that returns `self.new` and warns (for result dataclasses)."""

    def getter(self):
        warn_renamed(old, new, what="field")
        return getattr(self, new)

    return property(getter, doc=f"Deprecated: use `{new}`.")


def invert_bool(value: Any) -> Any:
    """`not value` for a boolean, anything else unchanged (so the new option's check reports it)."""
    return (not value) if isinstance(value, bool) else value


__all__ = [
    "REMOVED_IN", "Rename", "invert_bool", "renamed_field", "renamed_options", "renamed_values", "translate",
    "translate_values", "warn_renamed",
]
