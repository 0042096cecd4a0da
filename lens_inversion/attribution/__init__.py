"""Input attribution: gradient × input, batched occlusion, their combination, faithfulness."""

from .api import attribute as attribute
from .faithfulness import FaithfulnessResult as FaithfulnessResult
from .faithfulness import faithfulness as faithfulness
from .result import AttributionResult as AttributionResult
