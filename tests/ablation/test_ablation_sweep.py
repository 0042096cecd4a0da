"""Batched sweeps equal a naive loop of one ablated forward per cell."""

import pytest
import torch
from _tolerances import assert_close

import lens_inversion as li
from lens_inversion.ablation import Ablate, BandwidthResult, TruncateWidth, ablated, ablation_sweep, bandwidth
from lens_inversion.hooks import adapter_for

pytestmark = pytest.mark.backend_generic

PROMPT = "The sky is blue. The cat sat"
REFERENCE = "A cat sat on the mat while the dog slept"


def _naive(model, tokens, spec, metric):
    with ablated(model, spec), torch.no_grad():
        return metric(model(tokens))


@pytest.mark.parametrize(
    "site, ablation, metric",
    [
        ("resid_pre", "zero", "kl"),
        ("attn_out", "mean", "prob"),
        ("resid_mid", "resample", "logit_diff"),
        ("embed", "zero", "cross_entropy"),
    ],
)
def test_sweep_equals_naive_loop(model, site, ablation, metric):
    adapter = adapter_for(model)
    tokens = adapter.prompt(PROMPT).tokens
    with torch.no_grad():
        clean = model(tokens)
    top = clean[0, -1].topk(2).indices
    reference = REFERENCE if ablation == "resample" else None
    with pytest.deprecated_call():  # an arbitrary list of positions is the old positions= spelling
        result = ablation_sweep(
            model,
            PROMPT,
            ablation=ablation,
            site=site,
            metric=metric,
            reference=reference,
            positions=[0, 3, 7, -1],
            batch_size=3,
            progress=False,
        )

    def score(logits):
        if metric == "kl":
            p = clean[0, -1].log_softmax(-1)
            return (p.exp() * (p - logits[0, -1].log_softmax(-1))).sum()
        if metric == "prob":
            return logits[0, -1].softmax(-1)[top[0]]
        if metric == "logit_diff":
            return logits[0, -1, top[0]] - logits[0, -1, top[1]]
        return torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:])

    expected = torch.empty_like(result.values)
    for i, layer in enumerate(result.layers):
        mean = None
        if ablation == "mean":
            target = li.Target(site=site, layer=None if site == "embed" else layer)
            mean = target.extract(model, PROMPT)[0].mean(0)
        for j, p in enumerate(result.columns):
            target = li.Target(site=site, layer=None if site == "embed" else layer, tokens=p)
            spec = Ablate(target, mode=ablation, reference=mean if ablation == "mean" else reference)
            expected[i, j] = _naive(model, tokens, spec, score)
    assert_close(result.values, expected, loose=20)
    assert result.columns == [0, 3, 7, tokens.shape[1] - 1]


def test_width_sweep_equals_naive_loop(gpt2):
    tokens = adapter_for(gpt2).prompt(PROMPT).tokens
    result = ablation_sweep(
        gpt2, PROMPT, ablation="truncate", target="resid_post", widths=[0, 16, 40, 64], metric="cross_entropy", progress=False
    )
    for i, layer in enumerate(result.layers):
        for j, width in enumerate(result.columns):
            spec = TruncateWidth(li.Target(site="resid_post", layer=layer), keep=width)
            expected = _naive(
                gpt2, tokens, spec, lambda lg: torch.nn.functional.cross_entropy(lg[0, :-1], tokens[0, 1:])
            )
            assert_close(result.values[i, j], expected, loose=20)
    assert result.values[0, -1] == pytest.approx(result.clean, abs=1e-4)


def test_callable_metric_and_plots(gpt2):
    result = ablation_sweep(gpt2, PROMPT, metric=lambda a, c: (a - c).abs().amax((1, 2)), progress=False)
    assert result.values.shape == (gpt2.cfg.n_layers, len(result.str_tokens))
    assert result.readout is None and result.clean == 0
    fig = result.plot()
    assert fig.data[0].type == "heatmap" and "0: " in fig.data[0].x[0]
    widths = ablation_sweep(gpt2, PROMPT, ablation="truncate", widths=[8, 64], progress=False)
    assert [t.name for t in widths.plot().data] == [f"layer {lay}" for lay in widths.layers]
    assert "layers" in repr(widths)


def test_bandwidth_full_width_is_intact(gpt2):
    result = bandwidth(gpt2, PROMPT, target="blocks.0.hook_resid_post", widths=[0, 32, 64], invert="no", progress=False)
    assert isinstance(result, BandwidthResult)
    assert result.kl[-1] == pytest.approx(0, abs=1e-6) and result.top1_agreement[-1] == 1
    assert result.min_width is not None and result.min_width <= 64
    assert result.plot().data


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target="logits"), "site"),
        (dict(ablation="noise"), "ablation"),
        (dict(metric="acc"), "metric"),
        (dict(ablation="resample"), "reference"),
        (dict(ablation="truncate", widths=[999]), "widths"),
        (dict(layers=[5]), "layer"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_sweep_errors(gpt2, kwargs, match):
    with pytest.raises(li.LensInversionError, match=match):
        ablation_sweep(gpt2, PROMPT, progress=False, **kwargs)


def test_sweep_takes_one_prompt(gpt2):
    with pytest.raises(li.PromptError, match="one prompt"):
        ablation_sweep(gpt2, [PROMPT, REFERENCE], progress=False)


@pytest.mark.parametrize("name", ["gpt2-hf", "llama-hf"])
@pytest.mark.parametrize(
    "site, metric", [("resid_pre", "kl"), ("attn_out", "cross_entropy"), ("resid_mid", "kl"), ("mlp_out", "cross_entropy")]
)
def test_prefix_reuse_matches_naive_loop(name, site, metric):
    """HF bridges reuse the clean prefix's keys/values; groups of several positions per forward."""
    from fixture_models import available_models, build

    if name not in available_models():
        pytest.skip(f"{name} needs TransformerLens 4")
    model = build(name)
    tokens = adapter_for(model).prompt(PROMPT).tokens
    with torch.no_grad():
        clean = model(tokens)
    result = ablation_sweep(model, PROMPT, target=site, metric=metric, progress=False)

    def score(logits):
        if metric == "cross_entropy":
            return torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:])
        p = clean[0, -1].log_softmax(-1)
        return (p.exp() * (p - logits[0, -1].log_softmax(-1))).sum()

    for i, layer in enumerate(result.layers):
        for j, p in enumerate(result.columns):
            spec = Ablate(li.Target(site=site, layer=layer, tokens=p))
            assert_close(result.values[i, j], _naive(model, tokens, spec, score), loose=20)
