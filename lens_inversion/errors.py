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


class HookNeverFiredError(LensInversionError):
    """A hook we attached was never called during the forward pass."""


def check_choice(name: str, value: object, choices: tuple) -> None:
    """Raise OptionError unless `value` is one of `choices`, naming all of them."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise OptionError(f"{name}={value!r} is not valid; choose one of: {valid}.")
