"""invert_corpus: its totals equal a plain loop of li.invert over the same windows; resume; errors; 2 processes."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrun_harness import PRELUDE, run_torchrun

import lens_inversion as li
from lens_inversion.corpus import invert_job
from lens_inversion.corpus.invert_job import invert_corpus, windows
from lens_inversion.errors import OptionError, TargetError
from lens_inversion.hooks import adapter_for
from lens_inversion.inversion.result import InversionWarning

pytestmark = pytest.mark.backend_generic

TEXTS = ["Hi.", "The sky is blue. The dog runs home.", "Peter gave a ladder to Lily.",
         "A judge decides cases. The singer sings songs. The dog likes to paint in the forest."]
N_TOKENS, N_PROMPTS = 6, 4
MISSING = " ladder"  # left out of the allowed vocabulary: the prompts holding it cannot be recovered


@pytest.fixture(scope="module")
def model():
    return li.load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def allowed(model):
    """The corpus's tokens and ids 0..39, less one token of the second prompt."""
    tok = adapter_for(model).tokenizer
    ids = {i for t in TEXTS for i in tok.encode(t, add_special_tokens=False)} | set(range(40))
    (missing,) = tok.encode(MISSING, add_special_tokens=False)
    return sorted(ids - {missing})


def _run(model, allowed, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InversionWarning)
        return invert_corpus(model, TEXTS, n_prompts=N_PROMPTS, n_tokens=N_TOKENS, allowed_tokens=allowed,
                             progress=False, **kw)


@pytest.fixture(scope="module")
def whole(model, allowed):
    return _run(model, allowed)


def _expected_windows(model):
    """The documented windows, cut here independently: per document, [0, n), [n, 2n), ..."""
    tok = adapter_for(model).tokenizer
    out = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        out += [ids[s:s + N_TOKENS] for s in range(0, len(ids) - N_TOKENS + 1, N_TOKENS)]
    return out[:N_PROMPTS]


def _loop_totals(model, allowed, method="exact", **invert_options):
    """The statistics from a plain loop of li.invert over the windows."""
    edges = [0, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000, math.inf]
    t = dict(prompts=0, exact=0, verified=0, correct=0, candidates=0, margin_sum=0.0, margins=[],
             position=np.zeros(N_TOKENS, dtype=np.int64), unique=np.zeros(N_TOKENS, dtype=np.int64))
    for ids in _expected_windows(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InversionWarning)
            res = li.invert(model, torch.tensor([ids]), target="blocks.3.hook_resid_post", progress=False, seed=0,
                            method=method, allowed_tokens=allowed, **invert_options)
        hit = np.array(res.tokens[0].tolist()) == np.array(ids)
        ok = res.verdict.status == "verified"
        t["prompts"] += 1
        t["exact"] += int(hit.all() and ok)
        t["verified"] += int(ok)
        t["correct"] += int(hit.sum())
        t["position"] += hit
        positions = getattr(res.trace, "positions", ())  # exact only; gradient traces have none
        for p in positions:
            t["unique"][p.position] += int(p.unique)
        t["candidates"] += sum(p.candidates_checked for p in positions)
        t["margins"] += [p.margin for p in positions if p.candidates_checked > 0]
    finite = [m for m in t["margins"] if math.isfinite(m)]
    t["hist"] = np.histogram(finite, bins=edges)[0].tolist()
    t["margin_sum"] = sum(finite)
    return t


def test_windows_are_consecutive_per_document_and_skip_short_ones(model):
    got = list(windows(adapter_for(model), TEXTS, n_tokens=N_TOKENS, n_prompts=None))
    tok = adapter_for(model).tokenizer
    lengths = [len(tok.encode(t, add_special_tokens=False)) for t in TEXTS]
    assert [w.tokens.tolist() for w in got[:N_PROMPTS]] == _expected_windows(model)
    assert len(got) == sum(n // N_TOKENS for n in lengths) and lengths[0] < N_TOKENS
    assert [(w.document, w.start) for w in got] == [(d, s) for d, n in enumerate(lengths)
                                                   for s in range(0, n - N_TOKENS + 1, N_TOKENS)]


def test_exact_totals_equal_a_plain_loop_of_invert(model, allowed, whole):
    loop = _loop_totals(model, allowed)
    assert 0 < loop["exact"] < loop["prompts"]  # the missing token makes the counts informative
    assert (whole.prompts, whole.exactly_recovered, whole.verified_prompts) == (
        loop["prompts"], loop["exact"], loop["verified"])
    assert whole.correct_tokens == loop["correct"] and whole.candidates_checked == loop["candidates"]
    assert whole.position_correct.tolist() == loop["position"].tolist()
    assert whole.position_unique.tolist() == loop["unique"].tolist()
    assert whole.margin_counts.tolist() == loop["hist"]
    assert whole.margin_sum == pytest.approx(loop["margin_sum"], rel=1e-6)  # float32 distances, run again
    assert whole.exact_recovery_rate == loop["exact"] / loop["prompts"]
    assert whole.token_accuracy == loop["correct"] / (N_PROMPTS * N_TOKENS)
    assert whole.run.items == N_PROMPTS and whole.run.tokens == N_PROMPTS * N_TOKENS
    assert whole.mean_seconds == pytest.approx(whole.seconds / N_PROMPTS)


def test_gradient_method_totals_equal_a_plain_loop(model, allowed):
    got = _run(model, allowed, method="embedding", steps=3)
    loop = _loop_totals(model, allowed, method="embedding", steps=3)
    assert (got.prompts, got.verified_prompts, got.correct_tokens) == (loop["prompts"], loop["verified"],
                                                                       loop["correct"])
    assert got.position_correct.tolist() == loop["position"].tolist()
    assert got.margin_count == 0 and got.candidates_checked == 0


SUMS = ("margin_sum", "mean_margin", "distance_sum")  # float32 distances: equal to float32 precision


def _counts(res) -> dict:
    """Everything but timings and float sums: these must be equal exactly."""
    data = res.to_dict()
    return {k: v for k, v in data.items() if k not in ("seconds", "mean_seconds", "run", *SUMS)}


def _assert_same_sums(got: dict, want) -> None:
    for k in SUMS:
        assert got[k] == pytest.approx(getattr(want, k), rel=1e-6, abs=1e-6), k


def test_an_interrupted_job_resumes_to_the_same_totals(model, allowed, whole, tmp_path, monkeypatch):
    path = tmp_path / "job.ckpt"
    real, calls = invert_job.invert, []

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(invert_job, "invert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(model, allowed, checkpoint=path, checkpoint_every=1)
    monkeypatch.setattr(invert_job, "invert", real)
    assert path.is_file()
    resumed = _run(model, allowed, checkpoint=path, checkpoint_every=1)
    assert resumed.run.resumed_items == 2 and resumed.run.items == N_PROMPTS
    assert _counts(resumed) == _counts(whole)
    _assert_same_sums(resumed.to_dict(), whole)
    with pytest.raises(OptionError, match=r"other options.*n_tokens"):
        invert_corpus(model, TEXTS, n_prompts=N_PROMPTS, n_tokens=5, allowed_tokens=allowed, progress=False,
                      checkpoint=path)


@pytest.mark.parametrize(("kw", "error", "match"), [
    (dict(n_tokens=0), OptionError, r"n_tokens must be an integer in 1\.\.128; got 0"),
    (dict(n_tokens=129), OptionError, r"n_tokens must be an integer in 1\.\.128"),
    (dict(n_prompts=0), OptionError, r"n_prompts must be a positive integer or None; got 0"),
    (dict(n_prompts="4"), OptionError, r"n_prompts must be a positive integer or None; got '4'"),
    (dict(method="greedy"), OptionError, r"method='greedy' is not valid; choose one of: 'embedding', 'direct', "
                                         r"'exact'"),
    (dict(corpus=42), OptionError, r"A corpus cannot be a int; give an iterable of strings"),
    (dict(corpus=Path("/nonexistent/corpus.txt")), OptionError, r"is not an existing file"),
    (dict(corpus=["Hi.", "Too short."]), OptionError, r"no document of at least n_tokens=6 tokens"),
    (dict(corpus=[1, 2]), OptionError, r"Corpus document 0 is a int, not a string"),
    (dict(method="embedding", tolerance=1e-3), OptionError, r"tolerance is not an option of method='embedding'; "
                                                            r"with it give only allowed_tokens, steps"),
    (dict(steps=5), OptionError, r"steps is not an option of method='exact'; with it give only allowed_tokens, "
                                 r"tolerance, exhaustive"),
    (dict(tolerance=2.0), OptionError, r"tolerance must be a finite number"),
    (dict(seed=-1), OptionError, r"seed=-1 is not valid"),
    (dict(checkpoint_every=0), OptionError, r"checkpoint_every must be a positive integer; got 0"),
    (dict(target="blocks.9.hook_resid_post"), TargetError, r"blocks\.9\.hook_resid_post"),
])
def test_bad_inputs_raise_typed_errors(model, kw, error, match):
    kw = {"corpus": TEXTS, "n_tokens": N_TOKENS, "progress": False, **kw}
    with pytest.raises(error, match=match):
        invert_corpus(model, kw.pop("corpus"), **kw)


def test_table_json_and_plot(whole):
    text = str(whole)
    assert "exact recovery" in text and f"{whole.exact_recovery_rate:.3f}" in text
    data = json.loads(whole.to_json())
    assert data["exactly_recovered"] == whole.exactly_recovered and data["run"]["items"] == N_PROMPTS
    assert len(data["margin_counts"]) == len(data["margin_edges"])
    fig = whole.plot()
    bars = [t for t in fig.data if t.type == "bar"]
    assert list(bars[0].y) == whole.position_recovery.tolist()
    assert sum(bars[1].y) == whole.margin_count + whole.margin_unrivalled


SCRIPT = """
import warnings
import lens_inversion as li
from lens_inversion.corpus.invert_job import invert_corpus
warnings.simplefilter("ignore")
model = li.load_model("tiny", device="cpu")
res = invert_corpus(model, {texts!r}, n_prompts={n_prompts}, n_tokens={n_tokens}, allowed_tokens={allowed!r},
                    progress=False)
write(res.to_dict())
"""


def test_two_gloo_processes_give_the_one_process_counts(allowed, whole, tmp_path):
    script = PRELUDE + SCRIPT.format(texts=TEXTS, n_prompts=N_PROMPTS, n_tokens=N_TOKENS, allowed=allowed)
    two = run_torchrun(script, tmp_path, nproc=2)
    assert two.returncode == 0, two.why()
    assert set(two.outputs) == {0, 1}
    for out in two.outputs.values():
        assert out["run"]["world_size"] == 2 and out["run"]["backend"] == "gloo"
        assert out["run"]["items"] == N_PROMPTS
        assert {k: v for k, v in out.items() if k not in ("seconds", "mean_seconds", "run", *SUMS)} == _counts(whole)
        _assert_same_sums(out, whole)
