"""Snapshot a model's state and check nothing changed: weights, hooks, grad flags, modes."""

import torch


def _hooks(model):
    out = {}
    for name, module in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            keys = tuple(getattr(module, attr, {}).keys())
            if keys:
                out[(name, attr)] = keys
    return out


def _graph_leaks(model):
    """Tensors with an autograd history left on modules: they keep a whole graph alive."""
    return sorted(
        f"{name}.{key}"
        for name, module in model.named_modules()
        for key, value in vars(module).items()
        if isinstance(value, torch.Tensor) and value.grad_fn is not None
    )


class Snapshot:
    def __init__(self, model):
        self.model = model
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self.grads = {n: p.grad for n, p in model.named_parameters()}
        self.training = {n: m.training for n, m in model.named_modules()}
        self.hooks = _hooks(model)
        self.leaks = _graph_leaks(model)

    def assert_unchanged(self):
        model = self.model
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), self.params[name]), f"parameter {name} changed"
            assert p.requires_grad == self.requires_grad[name], f"requires_grad of {name} changed"
            assert p.grad is self.grads[name], f".grad of {name} changed"
        for name, m in model.named_modules():
            assert m.training == self.training[name], f"training mode of {name!r} changed"
        assert _hooks(model) == self.hooks, "hooks were added or removed"
        assert _graph_leaks(model) == self.leaks, "tensors with autograd history left on the model"


def user_state(model, hook_name: str = "blocks.0.hook_resid_post") -> list:
    """Put the model in a state a user might have: already run, a hook of their own, odd flags.

    Returns the list the user's hook appends to on every call.
    """
    seen: list = []
    with torch.no_grad():  # a model the user has already run (backends wire lazy internals then)
        model(torch.tensor([[1, 2, 3]]))
    model.add_hook(hook_name, lambda x, hook: seen.append(1))
    next(model.parameters()).requires_grad_(True)
    model.train()
    return seen


def assert_user_hook_fires(model, seen: list) -> None:
    """The hook `user_state` attached is still there: one more forward, one more call."""
    before = len(seen)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    assert len(seen) == before + 1, "the user's own hook no longer fires"


def restore_defaults(model) -> None:
    """Undo `user_state` so the cached fixture serves the next test as built."""
    model.reset_hooks()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


class GlobalSnapshot:
    """Process-wide settings a call must not change, read with the libraries' own getters."""

    def __init__(self):
        import logging
        import random
        import warnings

        import numpy

        self.state = dict(
            torch_rng=torch.get_rng_state().clone(),
            numpy_rng=numpy.random.get_state()[1].copy(),
            numpy_pos=numpy.random.get_state()[2],
            python_rng=random.getstate(),
            dtype=torch.get_default_dtype(),
            threads=torch.get_num_threads(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            grad=torch.is_grad_enabled(),
            inference=torch.is_inference_mode_enabled(),
            filters=list(warnings.filters),
            loggers={n: logging.getLogger(n).level for n in ("transformers", "transformer_lens", "torch")},
        )

    def assert_unchanged(self):
        after = GlobalSnapshot().state
        for key, before in self.state.items():
            now = after[key]
            same = torch.equal(now, before) if isinstance(now, torch.Tensor) else (
                bool((now == before).all()) if hasattr(now, "all") else now == before)
            assert same, f"global state changed: {key}"
