"""Residual-ablation experiments: specs, the `ablated` context, batched sweeps, bandwidth."""

from .bandwidth import BandwidthResult as BandwidthResult
from .bandwidth import bandwidth as bandwidth
from .context import ablated as ablated
from .result import AblationResult as AblationResult
from .specs import Ablate as Ablate
from .specs import BypassLayerNorm as BypassLayerNorm
from .specs import FreezeLayerNorm as FreezeLayerNorm
from .specs import RemoveResidual as RemoveResidual
from .specs import TruncateWidth as TruncateWidth
from .specs import ZeroComponent as ZeroComponent
from .sweep import ablation_sweep as ablation_sweep
