"""Ctrl-C or a failing user hook in the middle of a long loop leaves the model untouched.

Every long-running public function is first run to completion with a counting user hook,
which tells how many times the hook fires during the whole job. The same call is then
interrupted at half that count (KeyboardInterrupt, or a RuntimeError from a broken user
hook), so the exception arrives inside the loop: between optimisation steps, occlusion
chunks, sweep cells, lens chunks or search positions. Afterwards the model must be exactly
as before (Snapshot: weights bit for bit, hooks, requires_grad, .grad, training mode, no
autograd history left on modules), the user's hooks must still be attached and firing,
and the same call must give the same result as the uninterrupted run.

A second test interrupts between iterations instead, through the progress bar (tqdm), the
way a Ctrl-C usually lands while a bar is drawn.
"""

import dataclasses
import importlib

import pytest
import torch
from fixture_models import build, has_hooked_transformer
from untouched import GlobalSnapshot, Snapshot, restore_defaults, user_state

import lens_inversion as li

pytestmark = pytest.mark.backend_generic

PROMPT = "The sky is blue. The grass is green."
T = "blocks.0.hook_resid_post"
Q = dict(progress=False)
# Both architectures as bridges; on TransformerLens 3.x (the backend_generic lane) also as HookedTransformer.
MODELS = ["gpt2-native", "llama-native", *(["gpt2-hooked", "llama-hooked"] if has_hooked_transformer() else [])]
RESID = "blocks.0.hook_resid_post"  # fires in every forward that reaches block 0
NORM = "ln_final.hook_normalized"  # fires wherever logits are made, also in the lens's chunk loop

LONG = [
    ("logit-lens-chunks", NORM, lambda m: li.logit_lens(m, [PROMPT, "A cat sat on the mat"], chunk_size=3, **Q)),
    ("exact-search", RESID, lambda m: li.invert(m, PROMPT, target=T, method="exact", seed=0, **Q)),
    ("gradient-steps", RESID, lambda m: li.invert(m, PROMPT, target=T, steps=8, n_restarts=2, **Q)),
    ("gradient-sequential", RESID, lambda m: li.invert(m, "The sky is", target=T, method="direct", steps=3, sequential=True, **Q)),
    (
        "occlusion-chunks",
        NORM,
        lambda m: li.attribute(m, PROMPT, method="occlusion", batch_size=2, reuse="recompute", **Q),
    ),
    ("occlusion-prefix-reuse", NORM, lambda m: li.attribute(m, PROMPT, method="occlusion", batch_size=2, **Q)),
    ("grad-x-input-rows", RESID, lambda m: li.attribute(m, PROMPT, per_output=True, batch_size=2, **Q)),
    ("ablation-sweep", NORM, lambda m: li.ablation_sweep(m, PROMPT, batch_size=2, **Q)),
    (
        "ablation-sweep-resample",
        RESID,
        lambda m: li.ablation_sweep(m, PROMPT, target="resid_pre", ablation="resample", reference=[PROMPT, PROMPT], batch_size=3, **Q),
    ),
    ("faithfulness-chunks", NORM, lambda m: li.faithfulness(m, PROMPT, li.attribute(m, PROMPT, **Q), batch_size=2, **Q)),
    ("bandwidth-widths", NORM, lambda m: li.bandwidth(m, PROMPT, target="resid_post.0", widths=[8, 16, 32, 64], invert="no", **Q)),
    ("orthogonal-walk", RESID, lambda m: li.orthogonal_walk(m, PROMPT, target=T, steps=6, **Q)),
    ("clamped-walk", RESID, lambda m: li.clamped_walk(m, PROMPT, target=T, steps=3, inner_steps=3, **Q)),
    ("feature-scan", RESID, lambda m: li.visualize_feature(m, target=f"{T}[:, -1, 3]", n_tokens=1, steps=2, batch_size=16, **Q)),
]


class Interrupt(RuntimeError):
    """What a broken user hook raises."""


def _tensors(result):
    """Every tensor field of a result dataclass (nested results included), by name."""
    out = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if isinstance(value, torch.Tensor):
            out[field.name] = value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update({f"{field.name}.{k}": v for k, v in _tensors(value).items()})
    return out


def _assert_same_result(a, b):
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys() and ta, "results carry no tensors to compare"
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], rtol=0, atol=0, equal_nan=True, msg=f"{key} differs after the interrupt")


@pytest.mark.parametrize("error", [KeyboardInterrupt, Interrupt], ids=["ctrl-c", "failing-hook"])
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("hook_name, call", [pytest.param(h, c, id=i) for i, h, c in LONG])
def test_interrupt_inside_a_forward_of_the_loop(name, hook_name, call, error):
    model = build(name)
    seen = user_state(model, "blocks.1.hook_resid_pre")
    fired = {"n": 0, "at": None}

    def interrupting(x, hook):
        fired["n"] += 1
        if fired["n"] == fired["at"]:
            raise error("interrupted by the user")

    model.add_hook(hook_name, interrupting)
    try:
        snapshot = Snapshot(model)
        clean = call(model)
        snapshot.assert_unchanged()
        total = fired["n"]
        assert total >= 4, f"the job fires {hook_name} only {total} times; not a loop to interrupt"
        fired.update(n=0, at=total // 2 + 1)
        settings = GlobalSnapshot()
        with pytest.raises(error):
            call(model)
        assert fired["n"] == total // 2 + 1, "the interrupt did not stop the job where it was raised"
        snapshot.assert_unchanged()
        settings.assert_unchanged()  # RNGs, dtype, threads, flags, warning filters, grad mode

        fired["at"] = None  # the user's hooks: still attached, and they fire once per forward
        before = (len(seen), fired["n"])
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3]]))
        assert (len(seen), fired["n"]) == (before[0] + 1, before[1] + 1), "a user hook was removed"
        _assert_same_result(call(model), clean)
        snapshot.assert_unchanged()
    finally:
        restore_defaults(model)


TQDM_MODULES = [
    "lens_inversion.lens.logit_lens",
    "lens_inversion.inversion.exact",
    "lens_inversion.inversion.gradient",
    "lens_inversion.inversion.walks",
    "lens_inversion.inversion.feature_viz",
    "lens_inversion.attribution.occlusion",
    "lens_inversion.attribution.grad_x_input",
    "lens_inversion.attribution.faithfulness",
    "lens_inversion.ablation.sweep",
]


class _Ticking:
    """A stand-in for tqdm that raises KeyboardInterrupt on its `at`-th tick (iteration or update)."""

    ticks = 0
    at = None

    def __init__(self, iterable=None, *args, **kwargs):
        self.iterable = iterable

    def _tick(self):
        _Ticking.ticks += 1
        if _Ticking.ticks == _Ticking.at:
            raise KeyboardInterrupt

    def __iter__(self):
        for item in self.iterable:
            self._tick()
            yield item

    def update(self, n=1):
        self._tick()

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("hook_name, call", [pytest.param(h, c, id=i) for i, h, c in LONG])
def test_interrupt_between_iterations_via_the_progress_bar(monkeypatch, hook_name, call):
    for module in TQDM_MODULES:
        monkeypatch.setattr(importlib.import_module(module), "tqdm", _Ticking)
    model = build("gpt2-native")
    seen = user_state(model, "blocks.1.hook_resid_pre")
    try:
        _Ticking.ticks, _Ticking.at = 0, None
        snapshot = Snapshot(model)
        call(model)
        snapshot.assert_unchanged()
        total = _Ticking.ticks
        assert total >= 2, f"this job has {total} progress tick(s); nothing to interrupt between"
        _Ticking.ticks, _Ticking.at = 0, total // 2 + 1
        settings = GlobalSnapshot()
        with pytest.raises(KeyboardInterrupt):
            call(model)
        assert _Ticking.ticks == total // 2 + 1
        snapshot.assert_unchanged()
        settings.assert_unchanged()
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3]]))
        assert len(seen) >= 1 and seen.count(1) == len(seen)
        n = len(seen)
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3]]))
        assert len(seen) == n + 1, "the user's hook no longer fires"
    finally:
        restore_defaults(model)
