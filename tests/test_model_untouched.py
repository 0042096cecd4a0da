"""Every public function leaves the model untouched, on success and on error.

Each area registers calls in `tests/<area>/untouched_cases.py`:
`CASES = [(id, fn(model))]` must succeed, `ERROR_CASES = [(id, fn(model))]` must raise a
LensInversionError. Both run with a user hook attached and a model in a non-default state
(training mode on, some parameters requiring grad) to catch any restoration bug.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from fixture_models import build
from untouched import Snapshot

import lens_inversion as li

HERE = Path(__file__).parent


def _collect(kind):
    cases = []
    for path in sorted(HERE.glob("*/untouched_cases.py")):
        spec = importlib.util.spec_from_file_location(f"untouched_{path.parent.name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases += [pytest.param(fn, id=f"{path.parent.name}-{name}") for name, fn in getattr(module, kind, [])]
    return cases


MODEL_NAMES = ["gpt2-native" if "gpt2-native" in __import__("fixture_models").available_models() else "gpt2-hooked",
               "llama-native"]


def _user_state(model):
    """Put the model in a state a user might have: a hook of their own, odd flags."""
    seen = []
    with torch.no_grad():  # a model the user has already run (backends wire lazy internals then)
        model(torch.tensor([[1, 2, 3]]))
    model.add_hook("blocks.0.hook_resid_post", lambda x, hook: seen.append(1))
    first = next(model.parameters())
    first.requires_grad_(True)
    model.train()
    return seen


def _restore(model):
    model.reset_hooks()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


@pytest.mark.backend_generic
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("call", _collect("CASES"))
def test_success_leaves_model_untouched(name, call):
    model = build(name)
    seen = _user_state(model)
    try:
        snapshot = Snapshot(model)
        call(model)
        snapshot.assert_unchanged()
        before = len(seen)
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3]]))
        assert len(seen) == before + 1, "the user's own hook no longer fires"
    finally:
        _restore(model)


@pytest.mark.backend_generic
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("call", _collect("ERROR_CASES"))
def test_error_leaves_model_untouched(name, call):
    model = build(name)
    _user_state(model)
    try:
        snapshot = Snapshot(model)
        with pytest.raises(li.LensInversionError):
            call(model)
        snapshot.assert_unchanged()
    finally:
        _restore(model)
