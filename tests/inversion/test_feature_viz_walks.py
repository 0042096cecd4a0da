import pytest
import torch
from _tolerances import assert_close

import lens_inversion as li
from lens_inversion.inversion import clamped_walk, orthogonal_walk, visualize_feature

PROMPT = "The sky is blue."
HOOK = "blocks.0.hook_resid_post"


def _capture(model, embeds, hook_name=HOOK):
    """Independent of the package: replace hook_embed, capture one hook."""
    got = {}
    model.run_with_hooks(
        torch.zeros(embeds.shape[:2], dtype=torch.long),
        fwd_hooks=[("hook_embed", lambda x, hook: embeds.to(x.dtype)), (hook_name, lambda x, hook: got.update(x=x))],
    )
    return got["x"].detach().double()


def test_scan_equals_naive_loop(gpt2):
    fv = visualize_feature(gpt2, target=f"{HOOK}[:, -1, 3:6]", n_tokens=1, objective="mean", steps=10, progress=False)
    bos = li.ModelAdapter(gpt2).bos_token_id
    for token in (2, 17, 150, int(fv.scan_tokens[0])):
        with torch.no_grad():
            _, cache = gpt2.run_with_cache(torch.tensor([[bos, token]]))
        assert_close(fv.scan_activations[token], cache[HOOK][0, -1, 3:6].mean(), loose=10)
    assert int(fv.scan_scores.argmax()) == int(fv.scan_tokens[0])
    # the exhaustive scan is the exact optimum over single tokens: the descent cannot beat it
    assert fv.scan_activations.max() >= fv.activation - 1e-6


def test_feature_viz_descent_reaches_high_activation(gpt2):
    target = f"{HOOK}[:, :, 20:24]"
    fv = visualize_feature(gpt2, target=target, n_tokens=3, c=100.0, steps=60, optimizer="adam", lr=0.1,
                           allowed_tokens=list(range(2, 300)), progress=False)
    assert fv.loss_history[-1] < fv.loss_history[0]
    assert fv.tokens.shape == (4,) and all(2 <= t < 300 for t in fv.tokens[1:].tolist())
    assert fv.scan_tokens is None
    with pytest.raises(li.OptionError, match="n_tokens"):
        visualize_feature(gpt2, target=target, n_tokens=0)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_orthogonal_walk_ratios_and_orthogonality(model, dtype, tol):
    walk = orthogonal_walk(model, PROMPT, target=HOOK, steps=4, step_size=0.05, dtype=dtype, progress=False)
    e = walk.embeddings
    out = [_capture(model, e[i : i + 1].float()) for i in range(len(e))]
    d_in = (e[0] - e).abs().flatten(1).sum(1).double()
    d_out = torch.stack([(out[0] - o).abs().sum() for o in out])
    assert_close(walk.input_distances.double(), d_in, rtol=1e-4, atol=1e-6)
    assert_close(walk.output_distances.double(), d_out, rtol=1e-3, atol=1e-4)
    assert_close(walk.ratios[1:].double(), d_in[1:] / d_out[1:], rtol=1e-3, atol=1e-4)
    assert torch.isnan(walk.ratios[0])
    assert walk.orthogonality.abs().max() < tol
    # each step has the requested length and leaves the BOS where it was
    steps = (e[1:] - e[:-1]).double()
    assert_close(steps.flatten(1).norm(dim=1), torch.full((4,), 0.05, dtype=torch.float64), rtol=1e-4, atol=1e-6)
    assert torch.equal(e[:, 0], e[0:1, 0].expand(5, -1))
    # independent check: the step is orthogonal to the gradient of ‖O(e)‖₁ at its start
    x = e[0:1].float().clone().requires_grad_(True)
    got = {}
    model.run_with_hooks(torch.zeros(x.shape[:2], dtype=torch.long),
                         fwd_hooks=[("hook_embed", lambda a, hook: x), (HOOK, lambda a, hook: got.update(o=a))])
    grad = torch.autograd.grad(got["o"].abs().sum(), x)[0]
    cos = float((grad.double() * steps[0]).sum() / (grad.double().norm() * steps[0].norm()))
    assert abs(cos) < 1e-4


def test_clamped_walk(gpt2):
    walk = clamped_walk(gpt2, PROMPT, target=HOOK, steps=3, clamp=-1, inner_steps=5, progress=False)
    e = walk.embeddings
    out = [_capture(gpt2, e[i : i + 1].float()) for i in range(len(e))]
    d_out = torch.stack([(out[0] - o).abs().sum() for o in out])
    d_in = (e[0] - e).abs().flatten(1).sum(1).double()
    assert_close(walk.ratios[1:].double(), d_in[1:] / d_out[1:], rtol=1e-3, atol=1e-4)
    assert torch.equal(e[:, 0], e[0:1, 0].expand(4, -1))
    assert walk.orthogonality is None and len(walk.texts) == 4
    with pytest.raises(li.OptionError, match="clamp"):
        clamped_walk(gpt2, PROMPT, target=HOOK, clamp=99)
    with pytest.raises(li.OptionError, match="BOS"):
        clamped_walk(gpt2, PROMPT, target=HOOK, clamp=0)


def test_result_plots(gpt2):
    res = li.inversion.invert(gpt2, PROMPT, target=HOOK, steps=3, progress=False)
    walk = orthogonal_walk(gpt2, PROMPT, target=HOOK, steps=2, progress=False)
    assert len(res.plot().data) == 1 and len(walk.plot().data) == 3
    assert "InversionResult(" in repr(res) and "WalkResult(" in repr(walk)
