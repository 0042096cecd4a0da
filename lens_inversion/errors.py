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


class ReusedContextError(LensInversionError):
    """A single-use context manager (such as `li.ablated(...)`) was entered a second time."""


# The option checks live in validation.py (which imports this module); they are re-exported
# here for existing imports, resolved on first use so either module may be imported first.
_FROM_VALIDATION = ("check_bool", "check_choice", "check_seed")


def __getattr__(name: str):
    if name in _FROM_VALIDATION:
        from . import validation

        return getattr(validation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DistributedError(LensInversionError):
    """A data-parallel corpus job could not finish on every process, so it returns nothing."""
