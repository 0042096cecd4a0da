"""lens_inversion: logit lens, input inversion, attribution and ablation for TransformerLens."""

from .errors import HookNeverFiredError, LensInversionError, OptionError, PromptError, TargetError, UnsupportedModelError
from .hooks import ModelAdapter, Site, Target
from .models import load_model

__all__ = [
    "HookNeverFiredError",
    "LensInversionError",
    "ModelAdapter",
    "OptionError",
    "PromptError",
    "Site",
    "Target",
    "TargetError",
    "UnsupportedModelError",
    "load_model",
]
