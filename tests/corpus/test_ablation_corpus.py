"""ablation_corpus: the totals of a plain loop of li.ablation_sweep, exact resume, typed errors, 2 gloo processes."""

import json

import pytest
import torch
from torchrun_harness import PRELUDE, run_torchrun

import lens_inversion as li
from lens_inversion.corpus import ablation_job
from lens_inversion.corpus.ablation_job import ablation_corpus
from lens_inversion.hooks.adapter import adapter_for

pytestmark = pytest.mark.backend_generic

MAX = 5
TEXTS = ["The rabbit likes to watch the clouds.", "Three plus three is six.", "",
         "When the dog is hungry, it says woof.", "The lion says roar."]
REFERENCE = "Peter gave a ladder to Lily, and Lily thanked Peter."


def _prompts(adapter, n):
    out = []
    for text in TEXTS:
        ids = [adapter.bos_token_id, *adapter.tokenizer.encode(text, add_special_tokens=False)][:MAX]
        if len(ids) >= 2:
            out.append(torch.tensor(ids))
    return out[:n]


def _loop(model, n, specs, layers, **options):
    """The reduction written out: Σ (value − clean) of every (layer, non-BOS position) cell, by distance."""
    sums = [[[0.0] * MAX for _ in layers] for _ in specs]
    counts, clean = [0] * MAX, 0.0
    for ids in _prompts(adapter_for(model), n):
        positions = list(range(1, len(ids)))
        for p in positions:
            counts[len(ids) - 1 - p] += 1
        for i, spec in enumerate(specs):
            ref = REFERENCE if spec in ("mean", "resample") and options.get("reference") else None
            extra = {k: v for k, v in options.items() if k != "reference"}
            target = li.Target.layerless("resid_post", tokens=slice(1, None))  # every position but BOS
            sweep = li.ablation_sweep(model, ids, ablation=spec, layers=layers, target=target, reference=ref,
                                      progress=False, **extra)
            for j in range(len(layers)):
                for c, p in enumerate(positions):
                    sums[i][j][len(ids) - 1 - p] += float(sweep.values[j, c]) - sweep.clean
        clean += sweep.clean
    return sums, counts, clean


@pytest.fixture(scope="module")
def whole(tiny):
    return ablation_corpus(tiny, TEXTS, specs=("zero", "mean"), layers=[0, -1], n_prompts=3,
                           max_tokens_per_prompt=MAX, progress=False)


def test_zero_and_mean_totals_equal_a_plain_loop_of_ablation_sweep(tiny, whole):
    sums, counts, clean = _loop(tiny, 3, ("zero", "mean"), [0, 3])
    assert whole.layers == [0, 3] and whole.specs == ("zero", "mean")
    assert whole.count_by_distance.tolist() == counts and whole.count == sum(counts)
    assert whole.sum_by_distance.tolist() == [[pytest.approx(row, abs=1e-6) for row in spec] for spec in sums]
    per_layer = [[sum(row) / sum(counts) for row in spec] for spec in sums]
    assert whole.mean_effect.tolist() == [pytest.approx(row, abs=1e-6) for row in per_layer]
    assert whole.clean_sum == pytest.approx(clean, abs=1e-9) and whole.run.items == 3


def test_resample_with_a_reference_and_the_prob_metric(tiny):
    options = dict(metric="prob", seed=3)
    got = ablation_corpus(tiny, TEXTS, specs="resample", layers=[1], reference=REFERENCE, n_prompts=2,
                          max_tokens_per_prompt=MAX, progress=False, **options)
    sums, counts, clean = _loop(tiny, 2, ("resample",), [1], reference=True, **options)
    assert got.count_by_distance.tolist() == counts
    assert got.sum_by_distance.tolist() == [[pytest.approx(row, abs=1e-6) for row in spec] for spec in sums]
    assert got.mean_clean == pytest.approx(clean / 2, abs=1e-9)


def test_an_interrupted_run_resumes_to_the_same_totals(tiny, whole, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ablation_job.ablation_sweep

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # two sweeps per prompt: the interrupt comes during the second prompt
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    path = tmp_path / "ablation.ckpt"
    options = dict(specs=("zero", "mean"), layers=[0, -1], n_prompts=3, max_tokens_per_prompt=MAX, progress=False,
                   checkpoint=path, checkpoint_every=1)
    monkeypatch.setattr(ablation_job, "ablation_sweep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ablation_corpus(tiny, TEXTS, **options)
    monkeypatch.setattr(ablation_job, "ablation_sweep", real)
    resumed = ablation_corpus(tiny, TEXTS, **options)
    assert resumed.run.resumed_items == 1 and resumed.run.items == 3
    assert torch.equal(resumed.sum_by_distance, whole.sum_by_distance)
    assert torch.equal(resumed.count_by_distance, whole.count_by_distance)
    assert resumed.clean_sum == whole.clean_sum
    with pytest.raises(li.OptionError, match=r"other options \(specs: \['zero', 'mean'\] there, \['zero'\] here"):
        ablation_corpus(tiny, TEXTS, **{**options, "specs": "zero"})


@pytest.mark.parametrize(("options", "error", "match"), [
    (dict(specs="truncate"), li.OptionError, r"sweeps kept widths, not positions; choose from 'zero', 'mean'"),
    (dict(specs="noise"), li.OptionError, r"specs='noise' is not valid; choose one of: 'zero', 'mean', 'resample'"),
    (dict(specs=[]), li.OptionError, r"non-empty list of them"),
    (dict(specs=["zero", "zero"]), li.OptionError, r"lists an ablation twice"),
    (dict(specs="resample"), li.OptionError, r"'resample' need reference="),
    (dict(specs="resample", reference="Hi.", max_tokens_per_prompt=8), li.OptionError,
     r"longest reference has 4 tokens but prompts may have max_tokens_per_prompt=8"),
    (dict(specs="zero", reference="Hi."), li.OptionError, r"reference= applies only to the specs 'mean' and"),
    (dict(metric="bits"), li.OptionError, r"metric='bits' is not valid; choose one of: 'kl'"),
    (dict(site="hook_z"), li.TargetError, r"Unknown site 'hook_z'; valid sites: embed, resid_pre"),
    (dict(target="logits"), li.OptionError, r"site='logits' cannot be ablated; choose one of: embed, resid_pre"),
    (dict(layers=[9]), li.TargetError, r"layers 0\.\.3"),
    (dict(layers=[1, 1]), li.OptionError, r"lists a layer twice"),
    (dict(include_bos="no"), li.OptionError, r"include_bos='no' is not valid"),
    (dict(max_tokens_per_prompt=1), li.OptionError, r"max_tokens_per_prompt"),
])
def test_bad_options_raise_typed_errors(tiny, options, error, match):
    with pytest.raises(error, match=match):
        ablation_corpus(tiny, TEXTS, progress=False, **options)


def test_result_views(whole, tmp_path):
    data = json.loads(whole.to_json(tmp_path / "a.json"))
    assert data["mean_effect"] == whole.mean_effect.tolist() and data["count"] == whole.count
    assert data["mean_by_distance"][0][0][MAX - 1] is None  # the BOS distance: never ablated
    heat = whole.plot()
    assert heat.data[0].type == "heatmap" and list(heat.data[0].x) == ["zero", "mean"]
    assert len(whole.plot(kind="distance", spec="mean").data[0].x) == MAX
    assert "layer" in str(whole) and "3 prompts" in str(whole)
    with pytest.raises(li.OptionError, match=r"spec='resample' is not valid; choose one of: 'zero', 'mean'"):
        whole.plot(kind="distance", spec="resample")


SCRIPT = PRELUDE + f"""
import lens_inversion as li
from lens_inversion.corpus.ablation_job import ablation_corpus
model = li.load_model("tiny")
TEXTS = {TEXTS!r}
got = ablation_corpus(model, TEXTS, specs="zero", layers=[2], n_prompts=4, max_tokens_per_prompt={MAX}, progress=False)
write({{"sums": got.sum_by_distance.tolist(), "counts": got.count_by_distance.tolist(), "clean": got.clean_sum,
       "run": got.run.to_dict()}})
"""


def test_two_gloo_processes_give_the_one_process_totals(tiny, tmp_path):
    two = run_torchrun(SCRIPT, tmp_path, nproc=2)
    assert two.returncode == 0, two.why()
    alone = ablation_corpus(tiny, TEXTS, specs="zero", layers=[2], n_prompts=4, max_tokens_per_prompt=MAX,
                            progress=False)
    assert set(two.outputs) == {0, 1}
    for out in two.outputs.values():
        assert out["run"]["world_size"] == 2 and out["run"]["backend"] == "gloo"
        assert out["run"]["items"] == 4 and out["run"]["tokens"] == alone.run.tokens
        assert out["counts"] == alone.count_by_distance.tolist()
        assert out["sums"] == [[pytest.approx(row, abs=1e-6) for row in spec] for spec in alone.sum_by_distance.tolist()]
        assert out["clean"] == pytest.approx(alone.clean_sum, abs=1e-9)


def test_old_site_and_loss_spellings_give_the_same_totals(tiny):
    options = dict(specs="zero", layers=[1], n_prompts=2, max_tokens_per_prompt=MAX, progress=False)
    with pytest.warns(DeprecationWarning, match="'site' is renamed 'target'"):
        old = ablation_corpus(tiny, TEXTS, site="attn_out", **options)
    new = ablation_corpus(tiny, TEXTS, target="attn_out", **options)
    assert torch.equal(old.sum_by_distance, new.sum_by_distance) and old.site == new.site == "attn_out"
    with pytest.warns(DeprecationWarning, match="'loss' is renamed 'cross_entropy'"):
        old = ablation_corpus(tiny, TEXTS, metric="loss", **options)
    new = ablation_corpus(tiny, TEXTS, metric="cross_entropy", **options)
    assert torch.equal(old.sum_by_distance, new.sum_by_distance) and new.metric == "cross_entropy"


def test_a_target_layer_and_feature_slice_equal_a_plain_loop(tiny):
    got = ablation_corpus(tiny, TEXTS, specs="zero", target="blocks.2.hook_mlp_out[:, :, :16]", n_prompts=2,
                          max_tokens_per_prompt=MAX, progress=False)
    assert got.layers == [2]
    total = 0.0
    for ids in _prompts(adapter_for(tiny), 2):
        sweep = li.ablation_sweep(tiny, ids, target="blocks.2.hook_mlp_out[:, 1:, :16]", progress=False)
        total += float((sweep.values.double() - sweep.clean).sum())
    assert float(got.sum_by_distance.sum()) == pytest.approx(total, abs=1e-9)
