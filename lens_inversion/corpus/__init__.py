"""Corpus-scale jobs on one streaming runner with exact totals, data-parallel under torchrun."""

from .batches import CorpusBatch
from .runner import CorpusTotals, corpus

__all__ = ["CorpusBatch", "CorpusTotals", "corpus"]
