"""Corpus-scale jobs on one streaming runner with exact totals, data-parallel under torchrun."""

from .batches import CorpusBatch
from .lens_eval import evaluate_lens
from .lens_eval_result import LensEvaluation
from .runner import CorpusTotals, corpus

__all__ = ["CorpusBatch", "CorpusTotals", "LensEvaluation", "corpus", "evaluate_lens"]
