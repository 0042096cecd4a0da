"""Every inversion result says whether it reproduces its target; the verdict agrees with a recomputation.

The independent checks: the decoded tokens' activation is recomputed by a separate full run
(`Target.extract`) and compared by hand; synthetic position reports pin each verdict branch.
"""

import math
import re

import pytest
import torch

import lens_inversion as li
from lens_inversion import Target
from lens_inversion.inversion.result import PositionReport, exact_verdict

PROMPT = "The sky is blue. The grass is"


@pytest.fixture(scope="module")
def tiny():
    return li.load_model("tiny")


def _recomputed_gap(model, res, target):
    t = Target.parse(target)
    got = t.extract(model, res.tokens, prepend_bos=False)
    want = t.extract(model, PROMPT)
    return float((got - want).pow(2).sum().sqrt()), float(want.pow(2).sum().sqrt())


def test_gradient_result_started_at_the_truth_is_verified(tiny):
    target = "blocks.1.hook_resid_post"
    res = li.invert(tiny, PROMPT, target=target, method="embedding", steps=2, lr=1e-6, start="mixed",
                    noise_weight=0.0, progress=False, seed=0)
    assert res.token_accuracy == 1.0
    gap, norm = _recomputed_gap(tiny, res, target)
    assert res.verdict.status == "verified" and gap <= 1e-4 * norm + 1e-6
    assert res.verdict.worst_distance == pytest.approx(gap, abs=1e-4)


def test_gradient_result_that_misses_is_not_verified_and_says_by_how_much(tiny):
    target = f"blocks.{tiny.cfg.n_layers - 1}.hook_resid_post"
    res = li.invert(tiny, PROMPT, target=target, method="embedding", steps=5, progress=False, seed=0)
    assert res.token_accuracy < 1.0
    gap, norm = _recomputed_gap(tiny, res, target)
    assert res.verdict.status == "not verified"
    assert res.verdict.worst_distance == pytest.approx(gap, rel=1e-4)
    assert res.verdict.tolerance == pytest.approx(1e-4 * norm + 1e-6, rel=1e-4)
    assert 'method="exact"' in res.verdict.reason


def _report(position, *, best, tol=1e-3, margin=1.0, checked=10):
    return PositionReport(position=position, token=position, candidates_checked=checked, margin=margin,
                          best_distance=best, seconds=0.0, unique=best <= tol < margin, tolerance=tol)


@pytest.mark.parametrize(
    ("reports", "end", "status", "says"),
    [
        ([_report(0, best=0.0), _report(1, best=1e-4)], 1e-4, "verified", "smallest margin 1"),
        ([_report(0, best=0.0), _report(1, best=0.5)], 0.5, "not verified", r"1 of 2 positions \(1\)"),
        ([_report(0, best=0.0), _report(1, best=1e-4, margin=1e-5)], 1e-4, "ambiguous", "position 1 has a rival"),
        ([_report(0, best=0.0), _report(1, best=math.nan, checked=0, margin=0.0)], 0.0, "ambiguous",
         "position 1 is not observed"),
        ([_report(0, best=0.0), _report(1, best=0.0)], 0.2, "not verified", "end-to-end distance 0.2"),
    ],
)
def test_exact_verdict_branches(reports, end, status, says):
    verdict = exact_verdict(tuple(reports), torch.tensor([end]), torch.tensor([1e-3]))
    assert verdict.status == status
    assert pytest.approx(verdict.worst_margin) == min(r.margin for r in reports if r.decided)
    assert re.search(says, verdict.reason), verdict.reason
