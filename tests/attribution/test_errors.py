"""Bad input raises a LensInversionError that names the problem."""

import pytest
import torch

import lens_inversion as li
from lens_inversion.attribution import attribute, faithfulness

PROMPT = "The sky is blue."


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(method="saliency"), "method='saliency' is not valid"),
        (dict(metric="l2"), "metric='l2' is not valid"),
        (dict(normalize="minmax"), "normalize"),
        (dict(window=0), "window must be a positive integer"),
        (dict(baseline="unk"), "baseline='unk' is not valid"),
        (dict(target="blocks.9.hook_resid_post"), "out of range"),
        (dict(answer=" blue sky"), "not a single token"),
        (dict(target=2.5), "target must be None"),
        (dict(answer=" is", per_output=True), "per_output=True needs"),
        (dict(target="blocks.0.hook_resid_post", metric="kl"), "needs target=None or a token"),
        (dict(signed="yes"), "signed must be True or False"),
        (dict(batch_size=0), "batch_size"),
        (dict(weights=(1,)), "weights must be two numbers"),
        (dict(objective=lambda logits: logits.sum()), "callable must return"),
    ],
)
def test_bad_options(gpt2, options, message):
    with pytest.raises(li.LensInversionError, match=message):
        attribute(gpt2, PROMPT, progress=False, **options)


def test_bad_prompts(gpt2):
    with pytest.raises(li.PromptError, match="one prompt at a time"):
        attribute(gpt2, ["a", "b"], progress=False)
    with pytest.raises(li.PromptError, match="besides BOS"):
        attribute(gpt2, torch.tensor([gpt2.tokenizer.bos_token_id]), progress=False)


def test_faithfulness_checks_its_inputs(gpt2):
    result = attribute(gpt2, PROMPT, progress=False)
    with pytest.raises(li.PromptError, match="does not tokenize"):
        faithfulness(gpt2, "Another prompt.", result, progress=False)
    with pytest.raises(li.OptionError, match="AttributionResult"):
        faithfulness(gpt2, PROMPT, "not a result", progress=False)
