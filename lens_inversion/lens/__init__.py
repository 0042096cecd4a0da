"""The logit lens: residual streams decoded by the final norm and unembedding, with metrics."""

from .logit_lens import logit_lens as logit_lens
from .result import LogitLensResult as LogitLensResult
