"""Property-based tests for what tests/hooks/test_targets.py leaves out: any text parses to a
Target or raises TargetError (nothing else), the short and spaced forms, the global sites,
selection on tensors of any shape, index_positions, the lens's `positions` and layer
resolution."""

import numpy as np
import pytest
import torch
from fixture_models import build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lens_inversion as li
from lens_inversion.hooks import Site
from lens_inversion.hooks.targets import index_positions
from lens_inversion.lens.logit_lens import _positions

pytestmark = pytest.mark.backend_generic

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ints = st.one_of(st.none(), st.integers(-9, 9))
steps = st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0))
slices = st.builds(slice, ints, ints, steps)
indices = st.one_of(st.integers(-9, 9), slices)
block_sites = st.sampled_from([s for s in Site if s.per_block])


def _numpy_take(array, index, axis):
    """NumPy's answer, keeping the axis for an integer index; None when it selects nothing."""
    size = array.shape[axis]
    if isinstance(index, int):
        if not -size <= index < size:
            return None
        index = [index % size]
    chosen = np.arange(size)[index]
    return None if len(chosen) == 0 else np.take(array, chosen, axis=axis)


GRAMMAR = list("blocks.0123456789-_[]:, hookresidpostmlpattnembedlogit")


@st.composite
def near_valid(draw):
    """A valid target string with one character deleted, replaced or inserted."""
    target = li.Target(
        site=draw(block_sites), layer=draw(st.integers(-5, 5)), batch=draw(indices), tokens=draw(indices), features=draw(indices)
    )
    text = str(target)
    i = draw(st.integers(0, len(text)))
    edit = draw(st.sampled_from(["delete", "replace", "insert"]))
    char = draw(st.sampled_from(GRAMMAR))
    if edit == "delete":
        return text[:i] + text[i + 1 :]
    if edit == "replace":
        return text[:i] + char + text[i + 1 :]
    return text[:i] + char + text[i:]


@FAST
@given(st.one_of(st.text(alphabet=st.sampled_from(GRAMMAR), max_size=40), near_valid()))
def test_any_text_parses_or_raises_target_error(text):
    try:
        target = li.Target.parse(text)
    except li.TargetError as error:
        assert str(error)  # a message, never an empty error
        return
    assert li.Target.parse(str(target)) == target  # whatever parses, round trips


@FAST
@given(st.text(max_size=30))
def test_arbitrary_unicode_never_escapes_as_another_error(text):
    try:
        li.Target.parse(text)
    except li.TargetError:
        pass


@FAST
@given(site=block_sites, layer=st.integers(-5, 5), b=indices, t=indices, f=indices, spaces=st.booleans(), short=st.booleans())
def test_short_and_spaced_forms_parse_to_the_same_target(site, layer, b, t, f, spaces, short):
    target = li.Target(site=site, layer=layer, batch=b, tokens=t, features=f)
    text = str(target)
    if short:
        name, _, rest = text.partition("[")
        text = f"{site.value}.{layer}" + (f"[{rest}" if rest else "")
    if spaces:
        text = "  " + text.replace(",", " ,  ").replace("[", "[ ").replace("]", " ]") + " "
    assert li.Target.parse(text) == target


@FAST
@given(site=st.sampled_from([Site.EMBED, Site.LOGITS]), b=indices, t=indices, f=indices)
def test_global_sites_round_trip(site, b, t, f):
    target = li.Target(site=site, batch=b, tokens=t, features=f)
    assert li.Target.parse(str(target)) == target
    assert target.layer is None


@FAST
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 12)),
    b=indices,
    t=indices,
    f=indices,
)
def test_select_equals_numpy_on_any_shape(shape, b, t, f):
    array = np.arange(int(np.prod(shape))).reshape(shape)
    target = li.Target(site="resid_mid", layer=0, batch=b, tokens=t, features=f)
    expected = array
    for axis, index in enumerate((b, t, f)):
        expected = _numpy_take(expected, index, axis)
        if expected is None:
            with pytest.raises(li.TargetError, match="out of range|selects nothing"):
                target.select(torch.from_numpy(array))
            return
    got = target.select(torch.from_numpy(array))
    assert got.ndim == 3 and np.array_equal(got.numpy(), expected)
    # the indices the target reports are the ones it selects
    assert np.array_equal(np.unique(got.numpy() // shape[2] % shape[1]), np.unique(target.token_positions(shape[1])))
    assert np.array_equal(np.unique(got.numpy() % shape[2]), np.unique(target.feature_indices(shape[2])))


@FAST
@given(index=st.one_of(st.integers(-15, 15), slices), size=st.integers(1, 12))
def test_index_positions_follow_python_ranges(index, size):
    if isinstance(index, int):
        expected = [index % size] if -size <= index < size else []
    else:
        expected = list(range(size))[index]
    if not expected:
        with pytest.raises(li.TargetError, match=rf"size {size}"):
            index_positions(index, size, "token")
    else:
        assert index_positions(index, size, "token") == expected


@FAST
@given(
    positions=st.one_of(st.none(), st.integers(-12, 12), slices, st.lists(st.integers(-12, 12), max_size=5)),
    width=st.integers(1, 10),
)
def test_lens_positions_are_sorted_unique_and_checked(positions, width):
    if positions is None:
        expected = list(range(width))
    elif isinstance(positions, slice):
        expected = list(range(width))[positions]
    else:
        items = [positions] if isinstance(positions, int) else positions
        if any(not -width <= p < width for p in items):
            with pytest.raises(li.OptionError, match="out of range"):
                _positions(positions, width)
            return
        expected = sorted({p % width for p in items})
    if not expected:
        with pytest.raises(li.OptionError, match="selects no position"):
            _positions(positions, width)
    else:
        assert _positions(positions, width) == expected


@FAST
@given(layer=st.integers(-6, 6), site=block_sites)
def test_resolve_normalises_negative_layers_or_names_the_range(layer, site):
    model = build("gpt2-native")
    n = model.cfg.n_layers
    target = li.Target(site=site, layer=layer)
    if -n <= layer < n:
        assert target.resolve(model).layer == layer % n
        assert str(target.resolve(model)) == f"blocks.{layer % n}.hook_{site.value}"
    else:
        with pytest.raises(li.TargetError, match=rf"layers 0\.\.{n - 1}"):
            target.resolve(model)
