"""ablation_sweep(target=...): the old site= / positions= / features= and metric="loss" give the same values."""

import pytest
import torch

import lens_inversion as li
from lens_inversion.ablation import ablation_sweep
from lens_inversion.hooks import adapter_for

pytestmark = pytest.mark.backend_generic

PROMPT = "The sky is blue. The cat sat"
Q = dict(progress=False)


@pytest.mark.parametrize(
    "old, new",
    [
        (dict(site="resid_pre"), dict(target="resid_pre")),
        (dict(site="attn_out", positions=slice(1, 4), features=slice(None, 32)), dict(target="attn_out[:, 1:4, :32]")),
        (dict(site="mlp_out", features=5), dict(target=li.Target.layerless("mlp_out", features=5))),
        (dict(site="resid_post", layers=[1]), dict(target="blocks.1.hook_resid_post")),
        (dict(site="resid_mid", positions=[2, 3, 4], layers=[0]), dict(target="resid_mid[:, 2:5]", layers=[0])),
        (dict(site="embed", positions=slice(-3, None)), dict(target="hook_embed[:, -3:]")),
    ],
)
def test_old_options_give_the_same_values_as_target(gpt2, old, new):
    with pytest.warns(DeprecationWarning, match="'target'"):
        before = ablation_sweep(gpt2, PROMPT, **old, **Q)
    after = ablation_sweep(gpt2, PROMPT, **new, **Q)
    assert torch.equal(before.values, after.values)
    assert (before.layers, before.columns, before.site, before.clean) == (after.layers, after.columns, after.site,
                                                                          after.clean)


def test_truncate_positions_follow_the_token_slice(gpt2):
    with pytest.warns(DeprecationWarning, match="'target'"):
        before = ablation_sweep(gpt2, PROMPT, ablation="truncate", positions=[1, 2], widths=[8, 32], layers=[0], **Q)
    after = ablation_sweep(gpt2, PROMPT, ablation="truncate", target="blocks.0.hook_resid_post[:, 1:3]",
                           widths=[8, 32], **Q)
    assert torch.equal(before.values, after.values) and after.columns == [8, 32]


def test_loss_is_the_old_spelling_of_cross_entropy(gpt2):
    with pytest.warns(DeprecationWarning, match="'cross_entropy'"):
        old = ablation_sweep(gpt2, PROMPT, metric="loss", layers=[0], **Q)
    new = ablation_sweep(gpt2, PROMPT, metric="cross_entropy", layers=[0], **Q)
    assert torch.equal(old.values, new.values) and new.metric == "cross_entropy"


def test_cross_entropy_is_the_mean_next_token_loss(gpt2):
    """Independent check: the clean value is torch's cross-entropy of the prompt's next tokens."""
    tokens = adapter_for(gpt2).prompt(PROMPT).tokens
    with torch.no_grad():
        logits = gpt2(tokens)
    expected = torch.nn.functional.cross_entropy(logits[0, :-1].float(), tokens[0, 1:])
    result = ablation_sweep(gpt2, PROMPT, metric="cross_entropy", layers=[0], **Q)
    assert result.clean == pytest.approx(float(expected), rel=1e-5)


def test_feature_slice_is_what_is_ablated(gpt2):
    """Independent check: one ablated forward with `ablated(Ablate(...))` of the same features."""
    from lens_inversion.ablation import Ablate, ablated

    tokens = adapter_for(gpt2).prompt(PROMPT).tokens
    result = ablation_sweep(gpt2, PROMPT, target="blocks.0.hook_resid_post[:, 2:3, :8]", **Q)
    with torch.no_grad():
        clean = gpt2(tokens)[0, -1].float().log_softmax(-1)
        with ablated(gpt2, Ablate(li.Target(site="resid_post", layer=0, tokens=2, features=slice(None, 8)))):
            ablated_logp = gpt2(tokens)[0, -1].float().log_softmax(-1)
    expected = (clean.exp() * (clean - ablated_logp)).sum()
    assert result.values.shape == (1, 1)
    assert float(result.values[0, 0]) == pytest.approx(float(expected), rel=1e-3, abs=1e-6)


def test_target_layer_and_layers_together_is_an_error(gpt2):
    with pytest.raises(li.OptionError, match="not both"):
        ablation_sweep(gpt2, PROMPT, target="blocks.0.hook_resid_post", layers=[1], **Q)


def test_old_and_new_together_is_an_error(gpt2):
    with pytest.raises(li.OptionError, match="give only target="):
        ablation_sweep(gpt2, PROMPT, target="resid_post", site="resid_pre", **Q)


def test_sweep_takes_one_batch_row(gpt2):
    with pytest.raises(li.TargetError, match="one prompt"):
        ablation_sweep(gpt2, PROMPT, target="resid_post[1:, :, :]", **Q)


def test_a_layerless_target_is_refused_where_no_layer_is_swept(gpt2):
    """Elsewhere a site without a layer is a TargetError asking for one, as before."""
    with pytest.raises(li.TargetError, match="needs a layer"):
        li.Target.parse("resid_post[:, 1:]")
    with pytest.raises(li.TargetError, match="needs a layer"):
        li.Target.layerless("resid_post").resolve(gpt2)
    with pytest.raises(li.TargetError, match="needs a layer"):
        li.bandwidth(gpt2, PROMPT, target=li.Target.layerless("resid_post"), invert="no", **Q)
    with pytest.raises(li.TargetError, match="integer layer"):
        li.Target(site="resid_post")


def test_layerless_string_form_round_trips():
    target = li.Target.parse("resid_post[:, 1:, :64]", layer_optional=True)
    assert target.layer is None and target.needs_layer
    assert str(target) == "resid_post[:, 1:, :64]"
    assert li.Target.parse(str(target), layer_optional=True) == target
    assert li.Target.layerless("embed") == li.Target(site="embed")


def test_cross_entropy_when_a_group_starts_at_the_last_position(tiny):
    """A reused prefix leaving one position still scores every position (was: an empty loss)."""
    from lens_inversion.ablation import Ablate, ablated

    tokens = adapter_for(tiny).prompt(PROMPT).tokens
    n = tokens.shape[1]
    result = ablation_sweep(tiny, PROMPT, target=f"blocks.1.hook_attn_out[:, {n - 2}:]", metric="cross_entropy",
                            batch_size=1, **Q)
    for j, p in enumerate(result.columns):
        with ablated(tiny, Ablate(li.Target(site="attn_out", layer=1, tokens=p))), torch.no_grad():
            logits = tiny(tokens)
        expected = torch.nn.functional.cross_entropy(logits[0, :-1].float(), tokens[0, 1:])
        assert float(result.values[0, j]) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
