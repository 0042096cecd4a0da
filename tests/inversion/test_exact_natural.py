"""Exact inversion recovers every token of natural prompts that are not in the training corpus.

Run through the key/value-cache fast path, after its self-check; the independent check is
the prompt's own tokenization. This is the case transformers 5.24 silently broke.
"""

import pytest
import torch

import lens_inversion as li
from lens_inversion.hooks import adapter_for

PROMPTS = (
    "Four score and seven years ago our fathers brought forth",
    "The bounty hunter tracked his mark across the desert.",
)


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_natural_prompts_first_and_last_block(name, prompt):
    model = li.load_model(name, device="cpu")
    truth = adapter_for(model).prompt(prompt).tokens
    for layer in (0, model.cfg.n_layers - 1):
        res = li.invert(model, prompt, target=f"blocks.{layer}.hook_resid_post", method="exact", progress=False, seed=0)
        assert torch.equal(res.tokens, truth), (layer, res.text)
        assert res.token_accuracy == 1.0
        assert any(c.name.startswith("kv_prefix") and c.passed for c in res.checks)
