"""The old spellings of attribution options and fields keep working for one release, with the same results."""

import pytest
import torch

import lens_inversion as li
from lens_inversion.attribution import attribute, faithfulness

PROMPT = "The sky is blue. The grass is"
Q = dict(progress=False)


def _same(a, b):
    assert torch.equal(a.raw_scores, b.raw_scores) and a.target == b.target and a.predicted_token == b.predicted_token


def test_chunk_size_is_the_old_batch_size(gpt2):
    with pytest.warns(DeprecationWarning, match="'chunk_size' is renamed 'batch_size'"):
        old = attribute(gpt2, PROMPT, method="occlusion", chunk_size=3, **Q)
    _same(old, attribute(gpt2, PROMPT, method="occlusion", batch_size=3, **Q))


@pytest.mark.parametrize("as_string", [True, False])
def test_a_token_target_is_the_old_answer(gpt2, as_string):
    from lens_inversion.hooks import adapter_for

    token = adapter_for(gpt2).token_strings([268])[0] if as_string else 268
    with pytest.warns(DeprecationWarning, match="'target' is renamed 'answer'"):
        old = attribute(gpt2, PROMPT, target=token, **Q)
    new = attribute(gpt2, PROMPT, answer=token, **Q)
    _same(old, new)
    assert "logit of" in new.target


def test_a_callable_target_is_the_old_objective(gpt2):
    def top4(logits):
        return logits[:, -1].softmax(-1)[:, :4]

    with pytest.warns(DeprecationWarning, match="'target' is renamed 'objective'"):
        old = attribute(gpt2, PROMPT, method="occlusion", target=top4, **Q)
    _same(old, attribute(gpt2, PROMPT, method="occlusion", objective=top4, **Q))


def test_an_activation_target_does_not_warn(gpt2, recwarn):
    attribute(gpt2, PROMPT, target="blocks.0.hook_resid_post[:, -1]", **Q)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_old_messages_name_the_option_used(gpt2):
    with pytest.warns(DeprecationWarning), pytest.raises(li.TargetError, match="target=' sky is blue'"):
        attribute(gpt2, PROMPT, target=" sky is blue", **Q)
    with pytest.raises(li.TargetError, match="answer=' sky is blue'"):
        attribute(gpt2, PROMPT, answer=" sky is blue", **Q)


def test_one_output_at_a_time(gpt2):
    with pytest.raises(li.OptionError, match="give one of target=, answer=, objective="):
        attribute(gpt2, PROMPT, target="blocks.0.hook_resid_post", answer=268, **Q)
    with pytest.raises(li.OptionError, match="give only answer="):
        attribute(gpt2, PROMPT, target=268, answer=268, **Q)


def test_normalisation_field_is_the_old_normalize(gpt2):
    result = attribute(gpt2, PROMPT, normalize="none", **Q)
    with pytest.warns(DeprecationWarning, match="'normalisation' is renamed 'normalize'"):
        assert result.normalisation == result.normalize == "none"
    assert "normalisation" not in {f.name for f in __import__("dataclasses").fields(result)}


def test_faithfulness_chunk_size_is_the_old_batch_size(gpt2):
    result = attribute(gpt2, PROMPT, **Q)
    with pytest.warns(DeprecationWarning, match="'chunk_size' is renamed 'batch_size'"):
        old = faithfulness(gpt2, PROMPT, result, chunk_size=2, steps=3, **Q)
    new = faithfulness(gpt2, PROMPT, result, batch_size=2, steps=3, **Q)
    assert torch.equal(old.deletion, new.deletion) and torch.equal(old.insertion, new.insertion)


def test_faithfulness_of_an_answer_scores_its_probability(gpt2):
    """Independent check: f at k=0 is softmax(logits)[answer] of the clean prompt."""
    from lens_inversion.hooks import adapter_for

    token = 268
    result = attribute(gpt2, PROMPT, answer=token, **Q)
    curves = faithfulness(gpt2, PROMPT, result, steps=2, **Q)
    with torch.no_grad():
        logits = gpt2(adapter_for(gpt2).prompt(PROMPT).tokens)[0, -1].float()
    assert float(curves.deletion[0]) == pytest.approx(float(logits.softmax(-1)[token]), rel=1e-4)


def test_per_output_matrix_without_data_is_an_option_error(gpt2):
    with pytest.raises(li.OptionError, match="per-output matrix"):
        attribute(gpt2, PROMPT, **Q).plot(kind="heatmap")
