"""lens_inversion: logit lens, input inversion, attribution and ablation for TransformerLens.

One import gives every capability through the model's own hooks:

>>> import lens_inversion as li  # doctest: +SKIP
>>> model = li.load_model("tiny")  # doctest: +SKIP
>>> li.logit_lens(model, "The sky is blue.").plot()  # doctest: +SKIP
"""

from .ablation import (
    Ablate,
    AblationResult,
    BandwidthResult,
    BypassLayerNorm,
    FreezeLayerNorm,
    RemoveResidual,
    TruncateWidth,
    ZeroComponent,
    ablated,
    ablation_sweep,
    bandwidth,
)
from .attribution import AttributionResult, FaithfulnessResult, attribute, faithfulness
from .errors import (
    HookNeverFiredError,
    LensInversionError,
    OptionError,
    PromptError,
    TargetError,
    UnsupportedModelError,
)
from .hooks import ModelAdapter, Site, Target
from .hooks.selfcheck import SelfCheckError, SelfCheckWarning, Verdict, strict_checks
from .inversion import (
    FeatureVizResult,
    InversionResult,
    InversionVerdict,
    InversionWarning,
    PositionReport,
    WalkResult,
    clamped_walk,
    decode_embeddings,
    invert,
    orthogonal_walk,
    visualize_feature,
)
from .lens import LogitLensResult, logit_lens
from .models import load_model
from .report import ReportResult, report

__version__ = "0.1.0"

__all__ = [
    "Ablate",
    "AblationResult",
    "AttributionResult",
    "BandwidthResult",
    "BypassLayerNorm",
    "FaithfulnessResult",
    "FeatureVizResult",
    "FreezeLayerNorm",
    "HookNeverFiredError",
    "InversionResult",
    "InversionVerdict",
    "InversionWarning",
    "LensInversionError",
    "LogitLensResult",
    "ModelAdapter",
    "OptionError",
    "PositionReport",
    "PromptError",
    "RemoveResidual",
    "ReportResult",
    "SelfCheckError",
    "SelfCheckWarning",
    "Site",
    "Target",
    "TargetError",
    "TruncateWidth",
    "UnsupportedModelError",
    "Verdict",
    "WalkResult",
    "ZeroComponent",
    "ablated",
    "ablation_sweep",
    "attribute",
    "bandwidth",
    "clamped_walk",
    "decode_embeddings",
    "faithfulness",
    "invert",
    "load_model",
    "logit_lens",
    "orthogonal_walk",
    "report",
    "strict_checks",
    "visualize_feature",
]
