import pytest
import torch
from _tolerances import assert_close

import lens_inversion as li
from lens_inversion.inversion import decode_embeddings
from lens_inversion.inversion.losses import loss_function, total_distance


def test_pinv_decoding_of_exact_embedding_returns_tokens(model):
    tokens = torch.tensor([[0, 5, 17, 42, 99, 250]])  # not 1: HF Llama zeroes the pad row
    embeds = model.W_E[tokens].detach() * li.ModelAdapter(model).embed_scale
    assert torch.equal(decode_embeddings(model, embeds)[..., 0], tokens)
    for decoding in ("cosine", "l2"):
        assert torch.equal(decode_embeddings(model, embeds, decoding=decoding)[..., 0], tokens)


def test_pinv_decoding_subtracts_positions(gpt2):
    adapter = li.ModelAdapter(gpt2)
    tokens = torch.tensor([[3, 8, 200, 77]])
    resid0 = adapter.embed(tokens).detach() + adapter.W_pos[:4].detach()
    assert torch.equal(decode_embeddings(gpt2, resid0, subtract_positions=True)[..., 0], tokens)


def test_allowed_tokens_masks_with_minus_infinity(gpt2):
    torch.manual_seed(0)
    embeds = torch.randn(2, 5, 64) * 0.1
    allowed = [7, 11, 150, 299]
    got = decode_embeddings(gpt2, embeds, allowed_tokens=allowed, top_k=3)
    # independent: least-squares coefficients, then argsort among the allowed ids only
    coeffs = torch.linalg.lstsq(gpt2.W_E.detach().T.double(), embeds.reshape(-1, 64).T.double()).solution.T
    sub = coeffs[:, allowed]
    expected = torch.tensor(allowed)[sub.argsort(dim=-1, descending=True)[:, :3]].reshape(2, 5, 3)
    assert torch.equal(got, expected)


def test_losses_match_formulas():
    torch.manual_seed(0)
    o, t = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    d = (o - t).reshape(3, -1)
    flat_o, flat_t = o.reshape(3, -1), t.reshape(3, -1)
    cos = torch.tensor([float(torch.dot(a, b) / (a.norm() * b.norm())) for a, b in zip(flat_o, flat_t, strict=True)])
    assert_close(loss_function("l1")(o, t), d.abs().mean(1))
    assert_close(loss_function("l2")(o, t), (d**2).mean(1).sqrt())
    assert_close(loss_function("cosine")(o, t), 1 - cos)
    assert_close(loss_function("combined", alpha=2.0, beta=0.5)(o, t), 2 * (1 - cos) + 0.5 * d.abs().mean(1))
    assert_close(total_distance(loss_function("l1"), [o, o], [t, t]), 2 * d.abs().mean(1))


def test_loss_callable_must_return_one_value_per_sample():
    fn = loss_function(lambda o, t: (o - t).abs().sum())
    with pytest.raises(li.OptionError, match="one value per sample"):
        fn(torch.zeros(2, 3, 4), torch.ones(2, 3, 4))
    with pytest.raises(li.OptionError, match="'l1'"):
        loss_function("l3")
