"""The split InversionResult (common part + trace), its device, the explicit `invert` signature
and the renamed options of the inversion family (old spellings warn and give the same result)."""

import dataclasses
import inspect
import os
import typing

import pytest
import torch

import lens_inversion as li
from lens_inversion.inversion import (
    ExactTrace,
    GradientTrace,
    clamped_walk,
    invert,
    invert_exact,
    invert_gradient,
    orthogonal_walk,
    visualize_feature,
)
from lens_inversion.inversion.candidates import allowed_ids
from lens_inversion.inversion.decode import allowed_mask

PROMPT = "The sky is blue."
HOOK = "blocks.0.hook_resid_post"
FAST = dict(steps=3, progress=False)
MOVED = ("top_k_tokens", "top_k_texts", "loss_history", "embeddings", "decoded_distance", "decoded_distances",
         "restart_distances", "restart_decoded_distances", "steps_run")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _tensors(value, path="result"):
    """Every tensor inside a result (dataclass fields, lists, tuples, dicts), with its path."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{path}[{k!r}]")


def test_signature_lists_every_option_of_both_methods():
    params = inspect.signature(li.invert).parameters
    for name in ("steps", "loss", "lr", "optimizer", "decoding", "top_k", "n_restarts", "include_bos",  # gradient
                 "beam", "hidden_top", "order", "batch_size", "tolerance", "exhaustive", "reuse",  # exact
                 "allowed_tokens", "n_pos", "seed", "progress", "strict"):
        assert name in params, name
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    gradient = inspect.signature(invert_gradient).parameters
    exact = inspect.signature(invert_exact).parameters
    for name, p in params.items():  # the defaults shown are the methods' own
        if name in gradient and name not in ("method",):
            assert repr(p.default) == repr(gradient[name].default), name
        elif name in exact:
            assert repr(p.default) == repr(exact[name].default), name
    assert "beam:" in li.invert.__doc__ and "n_restarts:" in li.invert.__doc__


@pytest.mark.skipif(
    os.environ.get("LI_STRICT_TESTS") == "1",
    reason="under the run-time shape checks jaxtyping wraps each overload stub in one shared wrapper code object, "
           "and typing's overload registry (keyed by the code's first line) then keeps only one of them",
)
def test_invert_has_one_overload_per_method_family():
    assert len(typing.get_overloads(li.invert.__wrapped__.__wrapped__)) == 2


def test_an_option_of_the_other_method_is_refused_even_at_its_default(gpt2):
    with pytest.raises(li.OptionError, match="Unknown option.*steps.*valid: .*beam"):
        invert(gpt2, PROMPT, target=HOOK, method="exact", steps=200)
    with pytest.raises(li.OptionError, match="Unknown option.*beam.*valid: .*steps"):
        invert(gpt2, PROMPT, target=HOOK, method="direct", beam=16)
    with pytest.raises(li.OptionError, match="Unknown option.*stepz"):
        invert(gpt2, PROMPT, target=HOOK, method="exact", stepz=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["embedding", "exact"])
def test_every_tensor_of_a_result_is_on_the_cpu(method, device):
    from fixture_models import build

    model = build("gpt2-native").to(device)
    options = FAST if method != "exact" else dict(progress=False)
    res = invert(model, PROMPT, target=HOOK, method=method, **options)
    found = list(_tensors(res))
    assert any(path.startswith("result.trace") for path, _ in found) or method == "exact"
    assert found and all(t.device.type == "cpu" for _, t in found), [(p, t.device) for p, t in found]
    assert isinstance(res.trace, ExactTrace if method == "exact" else GradientTrace)


def test_moved_fields_warn_and_read_the_trace(gpt2):
    res = invert(gpt2, PROMPT, target=HOOK, **FAST)
    for name in MOVED:
        with pytest.warns(DeprecationWarning, match=f"trace.{name}"):
            old = getattr(res, name)
        new = getattr(res.trace, name)
        assert old is new, name
    exact = invert(gpt2, torch.tensor([[0, 17, 42]]), target=HOOK, method="exact", progress=False)
    with pytest.warns(DeprecationWarning, match="trace.positions"):
        assert exact.positions is exact.trace.positions
    with pytest.warns(DeprecationWarning, match="trace.top_k_texts"):
        assert exact.top_k_texts == []  # what an exact result always had there
    assert {f.name for f in dataclasses.fields(res)}.isdisjoint(MOVED + ("positions",))


def test_fix_bos_is_include_bos_inverted(gpt2):
    new = invert(gpt2, PROMPT, target=HOOK, include_bos=True, **FAST)
    with pytest.warns(DeprecationWarning, match="'fix_bos' is renamed 'include_bos'"):
        old = invert(gpt2, PROMPT, target=HOOK, fix_bos=False, **FAST)
    assert torch.equal(old.tokens, new.tokens) and torch.equal(old.trace.loss_history, new.trace.loss_history)
    with pytest.warns(DeprecationWarning, match="include_bos"):
        direct = invert_gradient(gpt2, PROMPT, target=HOOK, fix_bos=True, **FAST)
    assert torch.equal(direct.tokens, invert_gradient(gpt2, PROMPT, target=HOOK, include_bos=False, **FAST).tokens)
    with pytest.raises(li.OptionError, match="both"):
        invert(gpt2, PROMPT, target=HOOK, fix_bos=True, include_bos=False, **FAST)


@pytest.mark.parametrize("walk", [orthogonal_walk, clamped_walk])
def test_walks_fix_bos_is_include_bos_inverted(gpt2, walk):
    options = dict(target=HOOK, steps=2, progress=False) | ({"inner_steps": 2} if walk is clamped_walk else {})
    for fix_bos in (True, False):
        new = walk(gpt2, PROMPT, include_bos=not fix_bos, **options)
        with pytest.warns(DeprecationWarning, match="include_bos"):
            old = walk(gpt2, PROMPT, fix_bos=fix_bos, **options)
        assert torch.equal(old.embeddings, new.embeddings)


def test_scan_batch_is_batch_size(gpt2):
    options = dict(target=f"{HOOK}[:, -1, 3]", n_tokens=1, steps=2, progress=False)
    new = visualize_feature(gpt2, batch_size=64, **options)
    with pytest.warns(DeprecationWarning, match="'scan_batch' is renamed 'batch_size'"):
        old = visualize_feature(gpt2, scan_batch=64, **options)
    assert torch.equal(old.scan_scores, new.scan_scores)


def test_exact_seed_defaults_to_zero(gpt2):
    tokens = torch.tensor([[0, 17, 42]])
    options = dict(target=HOOK, order="random", progress=False)
    assert inspect.signature(invert_exact).parameters["seed"].default == 0
    default, zero = invert_exact(gpt2, tokens, **options), invert_exact(gpt2, tokens, seed=0, **options)
    assert torch.equal(default.shifted_distances, zero.shifted_distances)
    assert [p.candidates_checked for p in default.trace.positions] == [p.candidates_checked for p in zero.trace.positions]


def test_one_allowed_tokens_parser(gpt2):
    """Every input either parser accepted before: ids, strings, range, set, tensor of ids, boolean mask."""
    adapter = li.ModelAdapter(gpt2)
    ids = [3, 17, 42]
    word = adapter.token_strings([17])[0]
    mask = torch.zeros(adapter.d_vocab, dtype=torch.bool)
    mask[ids] = True
    for given in (ids, tuple(ids), set(ids), torch.tensor(ids), mask, [3, word, 42], range(3, 4)):
        expected = sorted(set(range(3, 4))) if isinstance(given, range) else ids
        assert allowed_ids(adapter, given).tolist() == expected, given
        assert allowed_mask(adapter, given).nonzero().flatten().tolist() == expected, given
    for bad in ("x", [1.5], torch.tensor([1.0]), [], [adapter.d_vocab]):
        for parse in (allowed_ids, allowed_mask):
            with pytest.raises(li.OptionError, match="allowed_tokens"):
                parse(adapter, bad)


def test_an_unverified_exact_result_warns_at_the_callers_line(gpt2):
    import warnings

    for call in (lambda: invert(gpt2, PROMPT, target=f"{HOOK}[:, :-1, :]", method="exact", progress=False),
                 lambda: invert_exact(gpt2, PROMPT, target=f"{HOOK}[:, :-1, :]", progress=False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        found = [w for w in caught if issubclass(w.category, li.InversionWarning)]
        assert found and all(w.filename == __file__ for w in found), [(w.filename, w.lineno) for w in found]
