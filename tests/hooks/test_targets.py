"""Target parsing, formatting and selection, including property-based round trips."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lens_inversion as li
from lens_inversion.hooks import Site

pytestmark = pytest.mark.backend_generic

ints = st.one_of(st.none(), st.integers(-12, 12))
slices = st.builds(slice, ints, ints, st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0)))
indices = st.one_of(st.integers(-12, 12), slices)
sites = st.sampled_from([s for s in Site if s.per_block])


@given(site=sites, layer=st.integers(-5, 5), b=indices, t=indices, f=indices)
def test_round_trip(site, layer, b, t, f):
    target = li.Target(site=site, layer=layer, batch=b, tokens=t, features=f)
    assert li.Target.parse(str(target)) == target
    assert str(li.Target.parse(str(target))) == str(target)


@given(t=indices, f=indices, b=indices)
def test_select_follows_numpy(t, f, b):
    array = np.arange(3 * 7 * 11).reshape(3, 7, 11)
    target = li.Target(site="resid_post", layer=0, batch=b, tokens=t, features=f)
    expected = array
    ok = True
    for axis, index in enumerate((b, t, f)):
        index = slice(index, index + 1 if index != -1 else None) if isinstance(index, int) else index
        if isinstance((b, t, f)[axis], int) and not -array.shape[axis] <= (b, t, f)[axis] < array.shape[axis]:
            ok = False
            break
        expected = np.take(expected, np.arange(array.shape[axis])[index], axis=axis)
        if expected.shape[axis] == 0:
            ok = False
            break
    if not ok:
        with pytest.raises(li.TargetError):
            target.select(torch.from_numpy(array))
    else:
        assert np.array_equal(target.select(torch.from_numpy(array)).numpy(), expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "blocks.3.hook_resid_post[:, 1:, :2201]",
            li.Target(site="resid_post", layer=3, tokens=slice(1, None), features=slice(None, 2201)),
        ),
        ("resid_post.-1[:, -1, 2000]", li.Target(site="resid_post", layer=-1, tokens=-1, features=2000)),
        ("blocks.0.resid_mid", li.Target(site="resid_mid", layer=0)),
        ("hook_embed[:, 2:]", li.Target(site="embed", tokens=slice(2, None))),
        ("logits[:, -1, :]", li.Target(site="logits", tokens=-1)),
        (
            "blocks.2.hook_mlp_out[0, ::2, 5:9]",
            li.Target(site="mlp_out", layer=2, batch=0, tokens=slice(None, None, 2), features=slice(5, 9)),
        ),
    ],
)
def test_parse_forms(text, expected):
    assert li.Target.parse(text) == expected


@pytest.mark.parametrize(
    "text, match",
    [
        ("blocks.1.hook_resid_sideways", "valid sites"),
        ("blocks.x.hook_resid_post", "Cannot read target name"),
        ("blocks.1.hook_resid_post[:, 1:, :2, 4]", "1 to 3"),
        ("blocks.1.hook_resid_post[:, a:b]", "as an index"),
        ("blocks.1.hook_resid_post[:, ::0]", "zero"),
        ("blocks.1.hook_resid_post[:, 1:", "Malformed"),
        ("blocks.1.hook_resid_post[:, , 2]", "1 to 3"),
        ("hook_embed.3", "no layer"),
    ],
)
def test_parse_errors(text, match):
    with pytest.raises(li.TargetError, match=match):
        li.Target.parse(text)


def test_resolve_checks_the_model(gpt2):
    assert li.Target.parse("resid_post.-1").resolve(gpt2).layer == 1
    with pytest.raises(li.TargetError, match=r"layers 0\.\.1"):
        li.Target.parse("resid_post.5").resolve(gpt2)
    with pytest.raises(li.TargetError, match="feature"):
        li.Target.parse("resid_post.0[:, :, 64]").resolve(gpt2)


def test_extract_equals_cache(model):
    from lens_inversion.hooks import adapter_for

    tokens = adapter_for(model).prompt("The sky is blue.").tokens
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == "blocks.1.hook_resid_mid")
    got = li.Target.parse("blocks.1.hook_resid_mid[:, 1:, :20]").extract(model, tokens)
    torch.testing.assert_close(got, cache["blocks.1.hook_resid_mid"][:, 1:, :20])


def test_targets_are_hashable_and_frozen():
    t = li.Target.parse("resid_post.1[:, 1:]")
    assert {t: 1}[li.Target.parse("blocks.1.hook_resid_post[:, 1:, :]")] == 1
    with pytest.raises(AttributeError):
        t.layer = 2
