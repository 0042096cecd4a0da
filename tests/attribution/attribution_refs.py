"""Independent reference computations for the attribution tests (plain model calls and hooks)."""

import functools

import torch
from fixture_models import build_fresh

PROMPT = "The sky is blue. The"


@functools.cache
def float64_copy(name: str):
    """A private float64 copy of a fixture (the shared cached fixture is never changed)."""
    return build_fresh(name).double().eval()


def tokens_of(model, prompt: str = PROMPT) -> torch.Tensor:
    tok = model.tokenizer
    return torch.tensor([[tok.bos_token_id, *tok.encode(prompt, add_special_tokens=False)]])


def logits(model, tokens, embeds=None) -> torch.Tensor:
    """The model's logits; `embeds` replace the token embedding (hook_embed output)."""
    with torch.no_grad() if embeds is None or not embeds.requires_grad else torch.enable_grad():
        if embeds is None:
            return model(tokens, attention_mask=torch.ones_like(tokens))
        with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: embeds)]):
            return model(
                tokens.expand(embeds.shape[0], -1), attention_mask=torch.ones_like(tokens.expand(embeds.shape[0], -1))
            )


def activation(model, tokens, name: str) -> torch.Tensor:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name, attention_mask=torch.ones_like(tokens))
    return cache[name]


def frozen(model):
    """Context-free: parameters frozen so that only the input receives gradients."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model
