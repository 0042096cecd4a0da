"""Independent reference computations shared by several test areas (plain hooks and autograd)."""

import torch


def grad_x_input_reference(model, tokens, token: int, embed_scale: float) -> torch.Tensor:
    """|∂ logit[last, token] / ∂ e| ⊙ e summed over d_model per position, BOS zeroed: plain autograd."""
    embeds = (model.W_E.detach()[tokens] * embed_scale).requires_grad_(True)
    with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: embeds)]):
        out = model(tokens, attention_mask=torch.ones_like(tokens))
    (grad,) = torch.autograd.grad(out[0, -1, token], embeds)
    expected = (grad * embeds.detach()).abs().sum(-1)[0]
    expected[0] = 0.0
    return expected
