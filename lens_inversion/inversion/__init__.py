"""Input inversion (gradient and exact), decoding, losses, feature visualization and walks."""

from .api import invert as invert
from .decode import decode_embeddings as decode_embeddings
from .exact import ExactOptions as ExactOptions
from .exact import invert_exact as invert_exact
from .feature_viz import FeatureVizResult as FeatureVizResult
from .feature_viz import visualize_feature as visualize_feature
from .gradient import GradientOptions as GradientOptions
from .gradient import invert_gradient as invert_gradient
from .result import ExactTrace as ExactTrace
from .result import GradientTrace as GradientTrace
from .result import InversionResult as InversionResult
from .result import InversionVerdict as InversionVerdict
from .result import InversionWarning as InversionWarning
from .result import PositionReport as PositionReport
from .result import WalkResult as WalkResult
from .walks import clamped_walk as clamped_walk
from .walks import orthogonal_walk as orthogonal_walk
