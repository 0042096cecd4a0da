"""Error types raised by lens_inversion; all subclass ValueError."""


class LensInversionError(ValueError):
    """Base class of every error lens_inversion raises on user input."""


class TargetError(LensInversionError):
    """A target's site, layer or slice is malformed or out of range."""


class UnsupportedModelError(LensInversionError):
    """The object handed in is not a TransformerLens model we can drive."""


class PromptError(LensInversionError):
    """A prompt is empty, too long, or of a type we cannot tokenize."""


class OptionError(LensInversionError):
    """A keyword option has a value outside its valid choices."""


class ModelNotFoundError(OptionError):
    """A model name is neither built in, a usable local directory, nor a hub id we may fetch."""


class DeviceError(OptionError):
    """A device is not a torch device, holds no values (meta), or is not available here."""


class HookNeverFiredError(LensInversionError):
    """A hook we attached was never called during the forward pass."""


def check_choice(name: str, value: object, choices: tuple) -> None:
    """Raise OptionError unless `value` is one of `choices`, naming all of them."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise OptionError(f"{name}={value!r} is not valid; choose one of: {valid}.")


def check_seed(value: object, *, name: str = "seed", allow_none: bool = True) -> None:
    """Raise OptionError unless `value` is an integer seed (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        valid = "an integer or None" if allow_none else "an integer"
        raise OptionError(f"{name}={value!r} is not valid; give {valid}.")


def check_bool(name: str, value: object) -> None:
    """Raise OptionError unless `value` is True or False."""
    check_choice(name, value, (True, False))
