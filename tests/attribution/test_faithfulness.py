"""Deletion / insertion curves against forwards built by hand."""

import pytest
import torch
from attribution_refs import logits, tokens_of

from lens_inversion.attribution import attribute, faithfulness

PROMPT = "The sky is blue."


def test_curves_equal_manual_deletions(gpt2):
    result = attribute(gpt2, PROMPT, method="occlusion", progress=False)
    faith = faithfulness(gpt2, PROMPT, result, n_random=2, progress=False)
    tokens = tokens_of(gpt2, PROMPT)
    pad = gpt2.tokenizer.pad_token_id
    predicted = result.predicted_token_id
    order = [i for i, _, _ in result.top(len(result.str_tokens))]
    m = len(order)
    assert faith.k == list(range(m + 1))

    def prob(removed):
        t = tokens.clone()
        t[0, removed] = pad
        return float(logits(gpt2, t)[0, -1].softmax(-1)[predicted])

    deletion = torch.tensor([prob(order[:k]) for k in range(m + 1)])
    insertion = torch.tensor([prob(order[k:]) for k in range(m + 1)])
    torch.testing.assert_close(faith.deletion, deletion, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(faith.insertion, insertion, atol=1e-5, rtol=1e-4)
    full = deletion[0]
    assert faith.comprehensiveness == pytest.approx(float((full - deletion[1:]).mean()), abs=1e-5)
    assert faith.sufficiency == pytest.approx(float((full - insertion[1:]).mean()), abs=1e-5)
    assert faith.plot().data[0].name == "deletion"


def test_target_curves_use_distance(llama):
    result = attribute(llama, PROMPT, target="blocks.0.hook_resid_post", progress=False)
    faith = faithfulness(llama, PROMPT, result, steps=3, progress=False)
    assert faith.k[0] == 0 and faith.k[-1] == int(result.attributed.sum()) and len(faith.k) == 4
    assert abs(float(faith.deletion[0])) < 1e-3  # nothing removed: no change
    assert float(faith.deletion[-1]) < float(faith.deletion[0])
