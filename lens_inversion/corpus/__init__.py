"""Corpus-scale jobs on one streaming runner with exact totals, data-parallel under torchrun."""

from .ablation_job import AblationCorpusResult, ablation_corpus
from .attribute_job import AttributionCorpusResult, attribute_corpus
from .batches import CorpusBatch
from .invert_job import invert_corpus
from .invert_result import InversionCorpusResult
from .lens_eval import evaluate_lens
from .lens_eval_result import LensEvaluation
from .runner import CorpusTotals, corpus

__all__ = [
    "AblationCorpusResult", "AttributionCorpusResult", "CorpusBatch", "CorpusTotals", "InversionCorpusResult",
    "LensEvaluation", "ablation_corpus", "attribute_corpus", "corpus", "evaluate_lens", "invert_corpus",
]
