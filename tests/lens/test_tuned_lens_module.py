"""A TunedLens is an ordinary nn.Module: `eval()`, `train(mode)` and a parent module's mode switch work on it."""

import inspect

import torch
from torch import nn

from lens_inversion.lens.tuned import TunedLens


def _lens() -> TunedLens:
    return TunedLens(d_model=8, n_layers=2)


def test_eval_and_train_mode_switch_like_any_module():
    lens = _lens()
    assert lens.training  # nn.Module's default
    assert lens.eval() is lens and not lens.training
    assert not any(m.training for m in lens.modules())
    assert lens.train() is lens and lens.training
    assert lens.train(False) is lens and not lens.training
    assert lens.train(mode=True) is lens and lens.training


def test_a_parent_module_switches_the_lens_with_it():
    parent = nn.Sequential(nn.Linear(8, 8), _lens())
    parent.eval()
    assert not parent[1].training
    parent.train()
    assert parent[1].training and all(m.training for m in parent[1].modules())


def test_the_class_call_still_trains_and_shows_its_options():
    params = inspect.signature(TunedLens.train).parameters
    assert list(params)[:2] == ["model", "corpus"]
    assert {"steps", "tokens_per_step", "held_out", "progress"} <= set(params)
    assert "Train a tuned lens by distillation" in (TunedLens.train.__doc__ or "")


def test_an_instance_call_with_a_model_trains_a_new_lens(monkeypatch):
    calls = []

    def fake_train(model, corpus, opts, **kwargs):
        calls.append((model, corpus, opts.steps))
        return "trained"

    monkeypatch.setattr("lens_inversion.lens.tuned.train_tuned_lens", fake_train)
    assert _lens().train("model", ["text"], steps=3) == "trained"
    assert TunedLens.train("model", ["text"], steps=4) == "trained"
    assert calls == [("model", ["text"], 3), ("model", ["text"], 4)]
    assert torch.is_grad_enabled()
