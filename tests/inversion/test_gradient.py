import pytest
import torch
from _tolerances import assert_close

import lens_inversion as li
from lens_inversion.inversion import invert

PROMPT = "The sky is blue."
FAST = dict(steps=30, progress=False)


def _outputs(model, embeds, hook_name):
    """Independent of the package: replace hook_embed, capture one hook, full forward pass."""
    got = {}

    def save(x, hook):
        got["x"] = x

    model.run_with_hooks(
        torch.zeros(embeds.shape[:2], dtype=torch.long),
        fwd_hooks=[("hook_embed", lambda x, hook: embeds.to(x.dtype)), (hook_name, save)],
    )
    return got["x"].detach().float()


@pytest.mark.parametrize("method", ["embedding", "direct"])
def test_loss_decreases(model, method):
    res = invert(model, PROMPT, target="blocks.1.hook_resid_post", method=method, optimizer="adam", **FAST)
    assert res.trace.loss_history.shape == (30,)
    assert res.trace.loss_history[-1] < 0.7 * res.trace.loss_history[0]
    assert res.tokens.shape == res.true_tokens.shape


def test_untrained_single_block_l1_recovers_prompt(untrained):
    """The research's finding: through one untrained block, L1 embedding inversion is exact."""
    res = invert(untrained, PROMPT, target="blocks.0.hook_resid_post", loss="l1", steps=300, progress=False)
    assert res.token_accuracy == 1.0
    assert res.text == PROMPT
    assert res.closer_than_shift


def test_distances_recomputed_independently(gpt2):
    res = invert(gpt2, PROMPT, target="blocks.0.hook_resid_post", n_restarts=3, optimizer="adam", **FAST)
    assert res.trace.restart_distances.shape == (1, 3)
    best = res.trace.restart_decoded_distances.argmin(1)
    assert_close(res.trace.decoded_distances, res.trace.restart_decoded_distances.min(1).values)
    assert_close(res.distances, res.trace.restart_distances.gather(1, best[:, None]).flatten())
    truth = _outputs(gpt2, li.ModelAdapter(gpt2).embed(res.true_tokens).detach(), "blocks.0.hook_resid_post")
    mine = _outputs(gpt2, res.trace.embeddings, "blocks.0.hook_resid_post")
    assert_close(res.distances, (mine - truth).abs().mean((1, 2)), loose=10)
    decoded = _outputs(gpt2, li.ModelAdapter(gpt2).embed(res.tokens).detach(), "blocks.0.hook_resid_post")
    assert_close(res.trace.decoded_distances, (decoded - truth).abs().mean((1, 2)), loose=10)


def test_mixed_start_at_the_target_has_zero_distance(model):
    for method in ("embedding", "direct"):
        res = invert(model, PROMPT, target="blocks.1.hook_resid_post", method=method, start="mixed",
                     noise_weight=0.0, target_weight=1.0, steps=1, lr=1e-9, progress=False)
        assert float(res.trace.loss_history[0]) < 1e-5
        assert res.token_accuracy == 1.0


def test_restrictions_respected(gpt2):
    allowed = [li.ModelAdapter(gpt2).token_id(t) for t in (" the", " is", ".", "The")] + [5, 6, 7]
    for method in ("embedding", "direct"):
        res = invert(gpt2, PROMPT, target="blocks.0.hook_resid_post", method=method, allowed_tokens=allowed,
                     top_k=3, **FAST)
        free = res.trace.top_k_tokens[:, 1:]
        assert set(free.flatten().tolist()) <= set(allowed)
        assert res.trace.top_k_tokens.shape == (1, res.tokens.shape[1], 3)
        assert res.tokens[0, 0] == li.ModelAdapter(gpt2).bos_token_id


def test_slices_raw_activation_and_several_targets(gpt2):
    target = "blocks.1.hook_resid_post[:, 1:, :32]"
    from_prompt = invert(gpt2, PROMPT, target=target, seed=3, **FAST)
    act = li.Target.parse(target).extract(gpt2, PROMPT)
    n_pos = li.ModelAdapter(gpt2).prompt(PROMPT).pos
    from_act = invert(gpt2, act, target=target, seed=3, n_pos=n_pos, **FAST)
    assert torch.equal(from_prompt.tokens, from_act.tokens)
    assert_close(from_prompt.trace.loss_history, from_act.trace.loss_history)
    assert from_act.true_tokens is None and from_act.token_accuracy is None and from_act.shifted_distance is None
    both = invert(gpt2, PROMPT, target=["blocks.0.hook_resid_post", target], **FAST)
    assert both.targets == ("blocks.0.hook_resid_post", target)


def test_sequential_and_early_stop(gpt2):
    n_pos = li.ModelAdapter(gpt2).prompt(PROMPT).pos
    res = invert(gpt2, PROMPT, target="blocks.0.hook_resid_post", sequential=True, steps=5, progress=False)
    assert res.trace.steps_run == 5 * (n_pos - 1)
    early = invert(gpt2, PROMPT, target="blocks.0.hook_resid_post", optimizer="adam", stop_when_closer=True,
                   steps=400, progress=False)
    assert early.trace.steps_run < 400
    assert float(early.trace.loss_history[-1]) < early.shifted_distance


def test_embedding_swap_uses_the_other_embedding():
    from fixture_models import build

    native, hf = build("gpt2-native"), build("gpt2-hf")
    res = invert(native, PROMPT, target="blocks.0.hook_resid_post", embedding_from=hf, start="mixed",
                 noise_weight=0.0, target_weight=1.0, steps=1, lr=1e-9, progress=False)
    assert float(res.trace.loss_history[0]) < 1e-5  # the target was observed through hf's embedding
    plain = invert(native, PROMPT, target="blocks.0.hook_resid_post", seed=1, **FAST)
    same = invert(native, PROMPT, target="blocks.0.hook_resid_post", embedding_from=native, seed=1, **FAST)
    assert_close(plain.trace.loss_history, same.trace.loss_history)


def test_seed_reproducible(llama):
    a = invert(llama, PROMPT, target="blocks.0.hook_resid_post", seed=7, **FAST)
    b = invert(llama, PROMPT, target="blocks.0.hook_resid_post", seed=7, **FAST)
    assert torch.equal(a.trace.loss_history, b.trace.loss_history) and torch.equal(a.tokens, b.tokens)


def test_bad_options(gpt2):
    with pytest.raises(li.OptionError, match="method"):
        invert(gpt2, PROMPT, target="blocks.0.hook_resid_post", method="magic")
    with pytest.raises(li.OptionError, match="Unknown option"):
        invert(gpt2, PROMPT, target="blocks.0.hook_resid_post", stepz=3)
    with pytest.raises(li.PromptError, match="mixed"):
        invert(gpt2, torch.zeros(1, 3, 64), target="blocks.0.hook_resid_post", start="mixed", progress=False)
    with pytest.raises(li.OptionError, match="allowed_tokens"):
        invert(gpt2, PROMPT, target="blocks.0.hook_resid_post", allowed_tokens=[10_000], progress=False)


def test_half_precision_model_optimises_in_float32():
    model = li.load_model("tiny-untrained", device="cpu", dtype=torch.bfloat16)
    res = invert(model, PROMPT, target="blocks.0.hook_resid_post", steps=20, progress=False)
    assert res.trace.embeddings.dtype == torch.float32 and res.trace.loss_history.dtype == torch.float32
    assert res.trace.loss_history[-1] < 0.5 * res.trace.loss_history[0]
    assert next(model.parameters()).dtype == torch.bfloat16


def test_batch_of_prompts_and_batch_index(gpt2):
    prompts = ["The sky is blue.", "The sea is deep."]
    both = invert(gpt2, prompts, target="blocks.0.hook_resid_post", n_restarts=2, **FAST)
    assert both.tokens.shape[0] == 2 and both.trace.restart_distances.shape == (2, 2) and len(both.texts) == 2
    second = invert(gpt2, prompts, target="blocks.0.hook_resid_post[1, :, :]", **FAST)
    assert torch.equal(second.true_tokens[0], li.ModelAdapter(gpt2).prompt(prompts[1]).tokens[0])
