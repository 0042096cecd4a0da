"""Exact inversion recovers every token, with margins, and reports honestly what it cannot know.

The independent checks: the recovered ids equal the prompt's own tokenization, and the
target extracted from the recovered tokens by a separate full run equals the original.
"""

import math

import pytest
import torch
from _tolerances import assert_close
from untouched import Snapshot

from lens_inversion import InversionWarning, LensInversionError, OptionError, Target
from lens_inversion.hooks import adapter_for
from lens_inversion.inversion import invert
from lens_inversion.inversion.exact import invert_exact

TEXT = "The sky is blue. A cat sat."
QUIET = dict(progress=False, seed=0)


def _random_tokens(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, model.cfg.d_vocab, (1, n), generator=g)


def _check_exact(model, prompt, target, res):
    """All tokens right, all unique with positive margins, same activation as the original."""
    truth = adapter_for(model).prompt(prompt).tokens
    assert torch.equal(res.tokens, truth)
    assert res.token_accuracy == 1.0
    assert all(p.unique and p.margin > 0 and p.candidates_checked >= 1 for p in res.trace.positions if p.observed)
    assert [p.position for p in res.trace.positions] == list(range(truth.shape[1]))
    t = Target.parse(target)
    assert_close(t.extract(model, res.tokens), t.extract(model, truth), loose=10)
    assert res.distance < 1e-3 * res.shifted_distance
    assert res.verdict.status == "verified" and res.verdict.worst_distance <= res.verdict.tolerance


@pytest.mark.parametrize("kind", ["text", "random"])
def test_fixture_models_last_and_first_layer(model, kind):
    prompt = TEXT if kind == "text" else _random_tokens(model, 8)
    last = model.cfg.n_layers - 1
    for target in (f"blocks.{last}.hook_resid_post", "blocks.0.hook_resid_mid"):
        _check_exact(model, prompt, target, invert_exact(model, prompt, target=target, **QUIET))


@pytest.mark.parametrize("name", ["tiny", "untrained"])
@pytest.mark.parametrize("kind", ["text", "random"])
def test_embedded_models_every_depth(request, name, kind):
    model = request.getfixturevalue(name)
    prompt = "Alice gave bread to Bob." if kind == "text" else _random_tokens(model, 7, seed=1)
    last = model.cfg.n_layers - 1
    for target in ("blocks.0.hook_resid_post", f"blocks.{last // 2}.hook_resid_mid", f"blocks.{last}.hook_resid_post"):
        _check_exact(model, prompt, target, invert_exact(model, prompt, target=target, **QUIET))


def test_feature_slice_of_a_quarter(tiny):
    target = "blocks.3.hook_resid_post[:, :, :32]"
    _check_exact(tiny, "The sky is blue.", target, invert_exact(tiny, "The sky is blue.", target=target, **QUIET))


@pytest.mark.parametrize("name", ["gpt2-native", "llama-hf"])
def test_hidden_leading_positions_recovered_from_later_rows(name):
    from fixture_models import build

    model = build(name)
    for target in ("blocks.1.hook_resid_post[:, 1:, :]", "blocks.1.hook_resid_post[:, 2:, :]"):
        res = invert_exact(model, TEXT, target=target, **QUIET)
        _check_exact(model, TEXT, target, res)
        hidden = int(target.split("[:, ")[1].split(":")[0])
        assert [p.observed for p in res.trace.positions[:hidden]] == [False] * hidden
        assert all(p.unique for p in res.trace.positions)


def test_trailing_position_has_no_information(gpt2):
    with pytest.warns(InversionWarning, match=r"ambiguous: position \d+ is not observed"):
        res = invert_exact(gpt2, TEXT, target="blocks.1.hook_resid_post[:, :-1, :]", **QUIET)
    assert res.verdict.status == "ambiguous"
    truth = adapter_for(gpt2).prompt(TEXT).tokens
    last = res.trace.positions[-1]
    assert not last.observed and not last.unique and last.candidates_checked == 0 and math.isnan(last.best_distance)
    assert torch.equal(res.tokens[:, :-1], truth[:, :-1])


def test_allowed_tokens_respected(gpt2):
    adapter = adapter_for(gpt2)
    truth = adapter.prompt(TEXT).tokens[0]
    extra = torch.arange(40, 80)
    allowed = torch.cat([truth, extra]).unique()
    res = invert_exact(gpt2, TEXT, target="blocks.1.hook_resid_post", allowed_tokens=allowed, **QUIET)
    assert torch.equal(res.tokens[0], truth)
    assert all(p.candidates_checked <= len(allowed) for p in res.trace.positions)
    # Without the true token at position 2 nothing reproduces that row: reported, not hidden.
    banned = allowed[allowed != truth[2]]
    with pytest.warns(InversionWarning, match=r"not verified: \d+ of \d+ positions \(2, .*reproduced nothing.*worst: position 2"):
        res = invert_exact(gpt2, TEXT, target="blocks.1.hook_resid_post", allowed_tokens=banned, **QUIET)
    assert res.verdict.status == "not verified" and res.verdict.worst_distance > res.verdict.tolerance
    assert bool(torch.isin(res.tokens, banned).all())
    assert res.tokens[0, 2] != truth[2] and not res.trace.positions[2].unique
    assert res.trace.positions[2].candidates_checked == len(banned)  # fell back to the whole allowed set


def test_order_does_not_change_the_answer_and_exhaustive_margins(gpt2):
    target = "blocks.1.hook_resid_post"
    base = invert_exact(gpt2, TEXT, target=target, **QUIET)
    for order in ("random", "vocab"):
        assert torch.equal(invert_exact(gpt2, TEXT, target=target, order=order, **QUIET).tokens, base.tokens)
    full = invert_exact(gpt2, TEXT, target=target, exhaustive=True, **QUIET)
    assert torch.equal(full.tokens, base.tokens)
    assert all(p.candidates_checked == gpt2.cfg.d_vocab for p in full.trace.positions)
    # The runner-up over the whole vocabulary is at most as far as over a ranked subset.
    assert all(f.margin <= b.margin + 1e-5 for f, b in zip(full.trace.positions, base.trace.positions, strict=True))


@pytest.mark.parametrize("name", ["gpt2-hf", "llama-hf"])
def test_activation_input_cache_and_recompute_agree(name):
    from fixture_models import available_models, build

    if name not in available_models():
        pytest.skip(f"{name} needs TransformerLens 4")
    model = build(name)
    acts = Target.parse("blocks.1.hook_resid_post").extract(model, TEXT)
    truth = adapter_for(model).prompt(TEXT).tokens
    for reuse in ("auto", "recompute"):
        res = invert_exact(model, acts, target="blocks.1.hook_resid_post", reuse=reuse, **QUIET)
        assert torch.equal(res.tokens, truth) and res.token_accuracy is None


def test_batch_and_dispatcher(gpt2):
    prompts = torch.cat([_random_tokens(gpt2, 6, seed=1), _random_tokens(gpt2, 6, seed=2)])  # equal lengths
    adapter = adapter_for(gpt2)
    res = invert(gpt2, prompts, target="blocks.0.hook_resid_post", method="exact", **QUIET)
    assert torch.equal(res.tokens, adapter.prompt(prompts).tokens)
    assert len(res.trace.positions) == 2 * res.tokens.shape[1] and len(res.texts) == 2


def test_noisy_activation_is_not_claimed_unique(gpt2):
    acts = Target.parse("blocks.1.hook_resid_post").extract(gpt2, TEXT)
    noisy = acts + 0.5 * torch.randn(acts.shape, generator=torch.Generator().manual_seed(0))
    with pytest.warns(InversionWarning, match="not verified"):
        res = invert_exact(gpt2, noisy, target="blocks.1.hook_resid_post", **QUIET)
    assert res.verdict.status == "not verified"
    assert not any(p.unique or p.reproduced for p in res.trace.positions)
    assert all(p.best_distance > 0.1 for p in res.trace.positions)


@pytest.mark.parametrize(
    "options",
    [dict(order="best"), dict(beam=0), dict(tolerance=2.0), dict(reuse="never"), dict(batch_size=1.5),
     dict(allowed_tokens=[10**6]), dict(allowed_tokens=[])],
)
def test_bad_options_raise_and_leave_model_untouched(gpt2, options):
    snapshot = Snapshot(gpt2)
    with pytest.raises(OptionError):
        invert_exact(gpt2, TEXT, target="blocks.0.hook_resid_post", **QUIET, **options)
    snapshot.assert_unchanged()


def test_success_leaves_model_untouched(llama):
    seen = []
    llama.add_hook("blocks.0.hook_resid_post", lambda x, hook: seen.append(1))
    llama.train()
    try:
        snapshot = Snapshot(llama)
        res = invert_exact(llama, TEXT, target="blocks.1.hook_resid_post[:, 1:, :]", **QUIET)
        assert res.verdict.status == "verified"
        snapshot.assert_unchanged()
        with pytest.raises(LensInversionError):
            invert_exact(llama, TEXT, target="blocks.7.hook_resid_post", **QUIET)
        snapshot.assert_unchanged()
    finally:
        llama.reset_hooks()
        llama.eval()


def test_two_features_scan_everything_and_stay_exact(tiny):
    """Below 16 observed features the whole vocabulary is verified, so near-ties are seen."""
    target = "blocks.3.hook_resid_post[:, :, :2]"
    res = invert_exact(tiny, "The sky is blue.", target=target, **QUIET)
    assert res.token_accuracy == 1.0
    assert all(p.candidates_checked >= tiny.cfg.d_vocab for p in res.trace.positions)


@pytest.mark.parametrize("fixture", ["gpt2", "llama"])
def test_hidden_bos_with_few_features_is_recovered(fixture, request):
    """`[:, 1:, :8]`: the BOS is hidden and 8 features per position remain; every token comes back."""
    model = request.getfixturevalue(fixture)
    target = "blocks.1.hook_resid_post[:, 1:, :8]"
    res = invert_exact(model, TEXT, target=target, **QUIET)
    assert torch.equal(res.tokens, adapter_for(model).prompt(TEXT).tokens)
    assert res.verdict.status in ("verified", "ambiguous")  # position 0 is decided but not observed
    t = Target.parse(target)
    assert_close(t.extract(model, res.tokens), t.extract(model, TEXT), loose=10)


def test_hidden_first_token_that_is_not_bos_is_still_found(gpt2):
    """The BOS is only tried first: a prompt without one is verified like any other."""
    tokens = adapter_for(gpt2).prompt(TEXT).tokens[:, 1:]  # no BOS
    target = "blocks.1.hook_resid_post[:, 1:, :]"
    act = Target.parse(target).extract(gpt2, tokens)
    res = invert_exact(gpt2, act, target=target, n_pos=tokens.shape[1], **QUIET)
    assert torch.equal(res.tokens, tokens)
