"""Hook attachment always cleans up and never touches the user's hooks."""

import pytest
import torch
from untouched import Snapshot

import lens_inversion as li
from lens_inversion.hooks import attached, preserved

pytestmark = pytest.mark.backend_generic


def test_hooks_removed_after_error_in_hook(gpt2):
    snap = Snapshot(gpt2)

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with attached(gpt2, [("blocks.0.hook_resid_post", boom)]):
            gpt2(torch.tensor([[1, 2, 3]]))
    snap.assert_unchanged()


def test_hooks_removed_after_keyboard_interrupt(gpt2):
    snap = Snapshot(gpt2)
    with pytest.raises(KeyboardInterrupt):
        with preserved(gpt2), attached(gpt2, [("blocks.0.hook_resid_post", lambda x, hook: None)]):
            raise KeyboardInterrupt
    snap.assert_unchanged()


def test_never_fired_raises(gpt2):
    with pytest.raises(li.HookNeverFiredError, match="blocks.1.hook_resid_post"):
        with attached(gpt2, [("blocks.1.hook_resid_post", lambda x, hook: None)]):
            gpt2(torch.tensor([[1, 2, 3]]), stop_at_layer=1)


def test_unknown_hook_name(gpt2):
    with pytest.raises(li.TargetError, match="no hook point"):
        with attached(gpt2, [("blocks.0.hook_resid_sideways", lambda x, hook: None)]):
            pass


def test_user_hooks_survive_and_still_fire(gpt2):
    seen = []
    gpt2.add_hook("blocks.0.hook_resid_post", lambda x, hook: seen.append(1))
    try:
        with attached(gpt2, [("blocks.0.hook_resid_post", lambda x, hook: x * 2)]) as counts:
            gpt2(torch.tensor([[1, 2, 3]]))
        assert counts == [1] and seen == [1]
        gpt2(torch.tensor([[1, 2, 3]]))
        assert seen == [1, 1]
    finally:
        gpt2.reset_hooks()


def test_preserved_restores_flags_and_removes_leaks(gpt2):
    gpt2.train()
    p = next(gpt2.parameters())
    p.requires_grad_(True)
    try:
        snap = Snapshot(gpt2)
        with preserved(gpt2):
            assert not gpt2.training and not p.requires_grad
            gpt2.hook_dict["blocks.0.hook_resid_post"].register_forward_hook(lambda *a: None)  # a leak
        snap.assert_unchanged()
    finally:
        gpt2.eval()
