"""lens_inversion: logit lens, input inversion, attribution and ablation for TransformerLens.

One import gives every capability through the model's own hooks:

>>> import lens_inversion as li
>>> model = li.load_model("tiny")
>>> figure = li.logit_lens(model, "The sky is blue.", progress=False).plot()
>>> figure.layout.title.text.startswith("Logit lens")
True
"""

# The public names load on first use (PEP 562), so `import lens_inversion` and the
# `lens-inversion --help` command stay fast: torch, transformers and plotly load only
# when a capability is touched. Static checkers see the eager imports below.
import sys
import types
from typing import TYPE_CHECKING

_EXPORTS = {
    "Ablate": ".ablation",
    "AblationCorpusResult": ".corpus",
    "AblationResult": ".ablation",
    "AttributionCorpusResult": ".corpus",
    "AttributionResult": ".attribution",
    "BandwidthResult": ".ablation",
    "BypassLayerNorm": ".ablation",
    "CorpusBatch": ".corpus",
    "CorpusTotals": ".corpus",
    "DeviceError": ".errors",
    "DistributedError": ".errors",
    "LensEvaluation": ".corpus",
    "ExactTrace": ".inversion",
    "FaithfulnessResult": ".attribution",
    "FeatureVizResult": ".inversion",
    "FreezeLayerNorm": ".ablation",
    "GradientTrace": ".inversion",
    "HookNeverFiredError": ".errors",
    "InversionCorpusResult": ".corpus",
    "InversionResult": ".inversion",
    "InversionVerdict": ".inversion",
    "InversionWarning": ".inversion",
    "LensComparison": ".lens.compare",
    "LensInversionError": ".errors",
    "LogitLensResult": ".lens",
    "ModelAdapter": ".hooks",
    "ModelNotFoundError": ".errors",
    "OptionError": ".errors",
    "PositionReport": ".inversion",
    "PromptError": ".errors",
    "RemoveResidual": ".ablation",
    "ReportResult": ".report",
    "ReusedContextError": ".errors",
    "SelfCheckError": ".hooks.selfcheck",
    "SelfCheckWarning": ".hooks.selfcheck",
    "Site": ".hooks",
    "Target": ".hooks",
    "TargetError": ".errors",
    "TokenTrajectoryResult": ".lens.trajectory_result",
    "TruncateWidth": ".ablation",
    "TunedLens": ".lens.tuned",
    "UnsupportedModelError": ".errors",
    "Verdict": ".hooks.selfcheck",
    "WalkResult": ".inversion",
    "ZeroComponent": ".ablation",
    "ablated": ".ablation",
    "ablation_corpus": ".corpus",
    "ablation_sweep": ".ablation",
    "attribute": ".attribution",
    "attribute_corpus": ".corpus",
    "bandwidth": ".ablation",
    "clamped_walk": ".inversion",
    "compare_lenses": ".lens.compare",
    "corpus": ".corpus",
    "decode_embeddings": ".inversion",
    "evaluate_lens": ".corpus",
    "faithfulness": ".attribution",
    "fit_jacobian_lens": ".lens.trained",
    "invert": ".inversion",
    "invert_corpus": ".corpus",
    "load_lens": ".lens.trained",
    "load_model": ".models",
    "logit_lens": ".lens",
    "orthogonal_walk": ".inversion",
    "report": ".report",
    "strict_checks": ".hooks.selfcheck",
    "token_trajectory": ".lens.trajectory",
    "visualize_feature": ".inversion",
}

# bandwidth, faithfulness and logit_lens are named like their own modules and come from them:
# through the subpackage, mypy binds the module instead (the packages import each other).
if TYPE_CHECKING:  # pragma: no cover
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
    )
    from .ablation.bandwidth import bandwidth
    from .attribution import AttributionResult, FaithfulnessResult, attribute
    from .attribution.faithfulness import faithfulness
    from .corpus import (
        AblationCorpusResult,
        AttributionCorpusResult,
        CorpusBatch,
        CorpusTotals,
        InversionCorpusResult,
        LensEvaluation,
        ablation_corpus,
        attribute_corpus,
        corpus,
        evaluate_lens,
        invert_corpus,
    )
    from .errors import (
        DeviceError,
        DistributedError,
        HookNeverFiredError,
        LensInversionError,
        ModelNotFoundError,
        OptionError,
        PromptError,
        ReusedContextError,
        TargetError,
        UnsupportedModelError,
    )
    from .hooks import ModelAdapter, Site, Target
    from .hooks.selfcheck import SelfCheckError, SelfCheckWarning, Verdict, strict_checks
    from .inversion import (
        ExactTrace,
        FeatureVizResult,
        GradientTrace,
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
    from .lens import LogitLensResult
    from .lens.compare import LensComparison, compare_lenses
    from .lens.logit_lens import logit_lens
    from .lens.trained import fit_jacobian_lens, load_lens
    from .lens.trajectory import token_trajectory
    from .lens.trajectory_result import TokenTrajectoryResult
    from .lens.tuned import TunedLens
    from .models import load_model
    from .report import ReportResult, report


__version__ = "0.1.0"

__all__ = [
    "Ablate",
    "AblationCorpusResult",
    "AblationResult",
    "AttributionCorpusResult",
    "AttributionResult",
    "BandwidthResult",
    "BypassLayerNorm",
    "CorpusBatch",
    "CorpusTotals",
    "DeviceError",
    "DistributedError",
    "ExactTrace",
    "FaithfulnessResult",
    "FeatureVizResult",
    "FreezeLayerNorm",
    "GradientTrace",
    "HookNeverFiredError",
    "InversionCorpusResult",
    "InversionResult",
    "InversionVerdict",
    "InversionWarning",
    "LensComparison",
    "LensEvaluation",
    "LensInversionError",
    "LogitLensResult",
    "ModelAdapter",
    "ModelNotFoundError",
    "OptionError",
    "PositionReport",
    "PromptError",
    "RemoveResidual",
    "ReportResult",
    "ReusedContextError",
    "SelfCheckError",
    "SelfCheckWarning",
    "Site",
    "Target",
    "TargetError",
    "TokenTrajectoryResult",
    "TruncateWidth",
    "TunedLens",
    "UnsupportedModelError",
    "Verdict",
    "WalkResult",
    "ZeroComponent",
    "ablated",
    "ablation_corpus",
    "ablation_sweep",
    "attribute",
    "attribute_corpus",
    "bandwidth",
    "clamped_walk",
    "compare_lenses",
    "corpus",
    "decode_embeddings",
    "evaluate_lens",
    "faithfulness",
    "fit_jacobian_lens",
    "invert",
    "invert_corpus",
    "load_lens",
    "load_model",
    "logit_lens",
    "orthogonal_walk",
    "report",
    "strict_checks",
    "token_trajectory",
    "visualize_feature",
]


def __getattr__(name: str):
    """Import a public name's module on first access and cache the name here."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lens_inversion' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Keep `lens_inversion.report` the function when its submodule is imported (as eager imports did)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == f".{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
