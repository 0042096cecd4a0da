import pytest
import torch

import lens_inversion as li
from lens_inversion.inversion import invert


def test_exact_is_dispatched(gpt2):
    tokens = torch.tensor([[0, 17, 42]])
    res = invert(gpt2, tokens, target="blocks.0.hook_resid_post", method="exact", progress=False)
    assert res.method == "exact"
    assert torch.equal(res.tokens, tokens)


def test_options_are_checked_per_method(gpt2):
    with pytest.raises(li.OptionError, match="valid: "):
        invert(gpt2, "The sky", target="blocks.0.hook_resid_post", method="embedding", beam=3)
    with pytest.raises(li.OptionError, match="'embedding', 'direct', 'exact'"):
        invert(gpt2, "The sky", target="blocks.0.hook_resid_post", method="pinv")
