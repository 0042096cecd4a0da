"""attribute_corpus: the totals of a plain loop of li.attribute, exact resume, typed errors, token types."""

import json

import pytest
import torch

import lens_inversion as li
from lens_inversion.corpus import attribute_job
from lens_inversion.corpus.attribute_job import attribute_corpus
from lens_inversion.corpus.token_types import TOKEN_TYPES, token_type, token_types
from lens_inversion.hooks.adapter import adapter_for

pytestmark = pytest.mark.backend_generic

MAX = 6
# "" gives BOS alone and is skipped; n_prompts=3 stops before the last text
TEXTS = ["The rabbit likes to watch the clouds.", "", "Three plus three is six.",
         "When the dog is hungry, it says woof.", "The lion says roar."]


def _prompts(adapter, n=3):
    out = []
    for text in TEXTS:
        ids = [adapter.bos_token_id, *adapter.tokenizer.encode(text, add_special_tokens=False)][:MAX]
        if len(ids) >= 2:
            out.append(torch.tensor(ids))
    return out[:n]


def _loop(model, n=3, **options):
    """The reduction written out: |score| per attributed token, binned by distance and type, raw and max-abs."""
    adapter = adapter_for(model)
    n_types = len(TOKEN_TYPES)
    sums = {s: {"distance": [0.0] * MAX, "type": [0.0] * n_types} for s in ("raw", "max_abs")}
    counts = {"distance": [0] * MAX, "type": [0] * n_types}
    for ids in _prompts(adapter, n):
        result = li.attribute(model, ids, normalize="none", progress=False, **options)
        raw = result.raw_scores.tolist()
        attributed = [p for p in range(len(ids)) if bool(result.attributed[p])]
        top = max(abs(raw[p]) for p in attributed)
        kinds = token_types(adapter, ids.tolist())
        for p in attributed:
            d = len(ids) - 1 - p
            for axis, b in (("distance", d), ("type", kinds[p])):
                counts[axis][b] += 1
                sums["raw"][axis][b] += abs(raw[p])
                sums["max_abs"][axis][b] += abs(raw[p]) / top
    return sums, counts


def _assert_equal_to_loop(got, sums, counts):
    assert got.count_by_distance.tolist() == counts["distance"]
    assert got.count_by_type.tolist() == counts["type"]
    for scale in ("raw", "max_abs"):
        for axis in ("distance", "type"):
            assert got.sums[scale][axis].tolist() == pytest.approx(sums[scale][axis], abs=1e-6, rel=1e-6)
    means = [s / n if n else float("nan") for s, n in zip(sums["raw"]["distance"], counts["distance"], strict=True)]
    assert got.mean_by_distance("raw").tolist() == pytest.approx(means, rel=1e-6, nan_ok=True)


@pytest.fixture(scope="module")
def whole(tiny):
    return attribute_corpus(tiny, TEXTS, n_prompts=3, max_tokens_per_prompt=MAX, progress=False)


def test_grad_x_input_totals_equal_a_plain_loop_of_attribute(tiny, whole):
    sums, counts = _loop(tiny, method="grad_x_input")
    _assert_equal_to_loop(whole, sums, counts)
    assert whole.run.items == 3 and whole.run.tokens == sum(len(p) for p in _prompts(adapter_for(tiny)))
    assert counts["distance"][0] == 3 and sum(counts["distance"]) == whole.run.tokens - 3  # BOS left out


def test_include_bos_counts_bos_as_special(tiny):
    got = attribute_corpus(tiny, TEXTS, n_prompts=1, include_bos=True, max_tokens_per_prompt=MAX, progress=False)
    sums, counts = _loop(tiny, 1, include_bos=True)
    _assert_equal_to_loop(got, sums, counts)
    assert counts["type"][TOKEN_TYPES.index("special")] == 1 and counts["distance"][MAX - 1] == 1


def test_occlusion_options_pass_through(tiny):
    options = dict(method="occlusion", metric="kl", window=2, baseline="eos")
    got = attribute_corpus(tiny, TEXTS[:3], n_prompts=2, max_tokens_per_prompt=MAX, progress=False, **options)
    two = attribute_job.corpus_prompts(adapter_for(tiny), TEXTS[:3], n_prompts=2, max_tokens_per_prompt=MAX)
    assert [p.tolist() for p in two] == [p.tolist() for p in _prompts(adapter_for(tiny))[:2]]
    assert got.options["metric"] == "kl" and got.options["window"] == 2
    assert int(got.count_by_distance.sum()) == sum(len(p) - 1 for p in _prompts(adapter_for(tiny))[:2])
    first_two = _loop_on(tiny, _prompts(adapter_for(tiny))[:2], **options)
    assert got.sums["raw"]["distance"].tolist() == pytest.approx(first_two, abs=1e-6, rel=1e-6)


def _loop_on(model, prompts, **options):
    out = [0.0] * MAX
    for ids in prompts:
        result = li.attribute(model, ids, normalize="none", progress=False, **options)
        for p in range(1, len(ids)):
            out[len(ids) - 1 - p] += abs(float(result.raw_scores[p]))
    return out


def test_an_interrupted_run_resumes_to_the_same_totals(tiny, whole, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = attribute_job.attribute

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    path = tmp_path / "attr.ckpt"
    monkeypatch.setattr(attribute_job, "attribute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        attribute_corpus(tiny, TEXTS, n_prompts=3, max_tokens_per_prompt=MAX, progress=False, checkpoint=path,
                         checkpoint_every=1)
    monkeypatch.setattr(attribute_job, "attribute", real)
    resumed = attribute_corpus(tiny, TEXTS, n_prompts=3, max_tokens_per_prompt=MAX, progress=False,
                               checkpoint=path, checkpoint_every=1)
    assert resumed.run.resumed_items == 2 and resumed.run.items == 3
    assert torch.equal(resumed.count_by_distance, whole.count_by_distance)
    assert torch.equal(resumed.count_by_type, whole.count_by_type)
    for scale in ("raw", "max_abs"):
        for axis in ("distance", "type"):
            assert torch.equal(resumed.sums[scale][axis], whole.sums[scale][axis])
    with pytest.raises(li.OptionError, match=r"other options \(method: 'grad_x_input' there, 'occlusion' here"):
        attribute_corpus(tiny, TEXTS, method="occlusion", n_prompts=3, max_tokens_per_prompt=MAX, progress=False,
                         checkpoint=path)


@pytest.mark.parametrize(("options", "error", "match"), [
    (dict(method="saliency"), li.OptionError, r"method='saliency' is not valid; choose one of: 'grad_x_input'"),
    (dict(metric="l2"), li.OptionError, r"metric='l2' is not valid; choose one of: 'l1', 'kl'"),
    (dict(max_tokens_per_prompt=1), li.OptionError, r"max_tokens_per_prompt.*2\.\.128"),
    (dict(max_tokens_per_prompt=129), li.OptionError, r"max_tokens_per_prompt.*2\.\.128"),
    (dict(n_prompts=0), li.OptionError, r"n_prompts"),
    (dict(window=0), li.OptionError, r"window"),
    (dict(baseline="noise"), li.OptionError, r"baseline='noise' is not valid; choose one of: 'pad'"),
    (dict(weights=(1.0,)), li.OptionError, r"weights must be two numbers"),
    (dict(signed="yes"), li.OptionError, r"signed='yes' is not valid; choose one of: True, False"),
    (dict(checkpoint_every=0), li.OptionError, r"checkpoint_every"),
])
def test_bad_options_raise_typed_errors(tiny, options, error, match):
    with pytest.raises(error, match=match):
        attribute_corpus(tiny, TEXTS, progress=False, **options)


def test_bad_corpora_raise_typed_errors(tiny):
    with pytest.raises(li.OptionError, match=r"A corpus cannot be a int"):
        attribute_corpus(tiny, 5, progress=False)
    with pytest.raises(li.OptionError, match=r"gave nothing to run on"):
        attribute_corpus(tiny, ["", ""], progress=False)


def test_token_types_from_token_strings():
    def kind(text, previous=None, special=False, previous_special=False):
        return token_type(text, special=special, previous=previous, previous_special=previous_special)

    assert kind("<|endoftext|>", special=True) == "special"
    assert kind("\n") == kind(" ") == kind("") == "whitespace"
    assert kind(" 42") == kind("7", previous=" 1") == "number"
    assert kind(" rabbit", previous="The") == "word_start"
    assert kind("The") == kind("The", previous="<|endoftext|>", previous_special=True) == "word_start"
    assert kind("the", previous="(") == "word_start"
    assert kind("ter", previous=" Pe") == kind("'t", previous="don") == "word_continuation"
    assert kind(".") == kind(" (") == kind("\ufffd") == "punctuation"
    assert TOKEN_TYPES == ("special", "whitespace", "number", "word_start", "word_continuation", "punctuation")


def test_result_views(whole, tmp_path):
    data = json.loads(whole.to_json(tmp_path / "a.json"))
    assert data["count_by_type"] == whole.count_by_type.tolist()
    assert data["mean_by_type"]["raw"][TOKEN_TYPES.index("special")] is None  # BOS left out: nothing counted
    fig = whole.plot(scale="max_abs")
    assert [t.type for t in fig.data] == ["scatter", "bar"]
    assert "word_start" in str(whole) and "3 prompts" in str(whole)
    with pytest.raises(li.OptionError, match=r"scale='log' is not valid; choose one of: 'raw', 'max_abs'"):
        whole.mean_by_type("log")


def test_chunk_size_is_the_old_batch_size(tiny):
    options = dict(method="occlusion", n_prompts=2, max_tokens_per_prompt=MAX, progress=False)
    with pytest.warns(DeprecationWarning, match="'chunk_size' is renamed 'batch_size'"):
        old = attribute_corpus(tiny, TEXTS, chunk_size=3, **options)
    new = attribute_corpus(tiny, TEXTS, batch_size=3, **options)
    assert torch.equal(old.sums["raw"]["distance"], new.sums["raw"]["distance"])
    assert new.options["batch_size"] == 3
