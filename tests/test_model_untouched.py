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
from untouched import GlobalSnapshot, Snapshot, assert_user_hook_fires, restore_defaults, user_state

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


@pytest.mark.backend_generic
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("call", _collect("CASES"))
def test_success_leaves_model_untouched(name, call):
    model = build(name)
    seen = user_state(model)
    try:
        snapshot, settings = Snapshot(model), GlobalSnapshot()
        call(model)
        snapshot.assert_unchanged()
        settings.assert_unchanged()
        assert_user_hook_fires(model, seen)
    finally:
        restore_defaults(model)


@pytest.mark.backend_generic
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("call", _collect("ERROR_CASES"))
def test_error_leaves_model_untouched(name, call):
    model = build(name)
    user_state(model)
    try:
        snapshot, settings = Snapshot(model), GlobalSnapshot()
        with pytest.raises(li.LensInversionError):
            call(model)
        snapshot.assert_unchanged()
        settings.assert_unchanged()
    finally:
        restore_defaults(model)


GRAD_MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.mark.backend_generic
@pytest.mark.parametrize("mode", list(GRAD_MODES))
@pytest.mark.parametrize("call", _collect("CASES"))
def test_success_under_a_grad_disabled_caller(mode, call):
    """The caller's torch.no_grad() / inference_mode() breaks nothing and is still on afterwards."""
    model = build(MODEL_NAMES[0])
    snapshot = Snapshot(model)
    with GRAD_MODES[mode]():
        settings = GlobalSnapshot()
        call(model)
        settings.assert_unchanged()
        assert not torch.is_grad_enabled()
    snapshot.assert_unchanged()
