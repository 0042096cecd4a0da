"""Token-set trajectories against Hugging Face's own forward, the logit lens and independent lens readouts."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _tolerances import assert_close
from fixture_models import build_fresh
from lens_refs import resid_rows
from untouched import Snapshot, user_state

import lens_inversion as li
from lens_inversion.errors import LensInversionError, OptionError
from lens_inversion.lens.trajectory import token_trajectory
from lens_inversion.lens.trajectory_result import TokenTrajectoryResult

PROMPT = "The sky is blue. The grass is"
TOKENS = [" green", " blue", " red"]
TINY_DIR = Path(li.__file__).parent / "models" / "assets" / "tiny"


def _prob_rank(logits: torch.Tensor, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference probability and rank ([..., n]) by log_softmax and argsort, float64."""
    lp = F.log_softmax(logits.double(), dim=-1)
    order = lp.argsort(dim=-1, descending=True)
    rank = torch.stack([(order == i).double().argmax(-1) + 1 for i in ids], -1)
    return lp[..., ids].exp(), rank


def _reference_rank(logits: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """1 + number of strictly larger logits (ties share the better rank), from float32 logits."""
    z = logits.float()
    return torch.stack([(z > z[..., i : i + 1]).sum(-1) + 1 for i in ids], -1).float()


@pytest.fixture(scope="module")
def hf_tiny():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY_DIR).eval()


def test_matches_hugging_face_forward(tiny, hf_tiny):
    tr = token_trajectory(tiny, PROMPT, tokens=[*TOKENS, " Paris"], progress=False)
    with torch.no_grad():
        out = hf_tiny(tr.tokens[None], output_hidden_states=True)
        head = hf_tiny.lm_head
        # hidden_states[i] is the input of block i (0: the embedding); the last one already has ln_f applied.
        rows = [head(hf_tiny.transformer.ln_f(h))[0] for h in out.hidden_states[:-1]] + [out.logits[0]]
    logits = torch.stack(rows)  # [row, pos, vocab]
    assert tr.row_labels == ["embed", "0", "1", "2", "output"]
    assert logits.shape[0] == len(tr.row_labels)
    prob, _ = _prob_rank(logits, tr.token_ids)
    assert_close(tr.prob, prob.float(), atol=1e-5, rtol=1e-4)
    assert torch.equal(tr.rank, _reference_rank(logits, tr.token_ids))
    assert torch.isfinite(tr.prob).all() and tr.prob.shape == (5, tr.tokens.shape[0], 4)
    # The model is right on the last position: " green" is its top-1 at the output row.
    assert tr.rank[-1, -1, 0] == 1


def test_matches_logit_lens_prob_and_rank_of_the_final_top1(tiny):
    lens = li.logit_lens(tiny, PROMPT, compare="final", progress=False)
    ids = sorted(set(lens.final_top1.tolist()))
    tr = token_trajectory(tiny, PROMPT, tokens=ids, progress=False)
    which = torch.tensor([ids.index(i) for i in lens.final_top1.tolist()])
    pos = torch.arange(len(which))
    assert_close(tr.prob[:, pos, which], lens.prob)
    assert torch.equal(tr.rank[:, pos, which], lens.rank)
    assert tr.row_labels == lens.row_labels and tr.positions == lens.positions


def test_callable_lens_matches_an_independent_readout(gpt2):
    gen = torch.Generator().manual_seed(0)
    d = gpt2.cfg.d_model
    maps = {}

    def lens(resid, hook_name):
        if hook_name not in maps:
            maps[hook_name] = torch.eye(d) + 0.3 * torch.randn(d, d, generator=gen) / d**0.5
        return resid @ maps[hook_name]

    ids = [5, 17, 17, 40]
    tr = token_trajectory(gpt2, PROMPT, tokens=ids, lens=lens, rows="sublayers", chunk_size=3, progress=False)
    assert tr.lens == "custom" and tr.row_lenses[-1] == "model" and set(tr.row_lenses[:-1]) == {"custom"}
    with torch.no_grad():
        resids, logits = resid_rows(gpt2, tr.tokens[None], rows="sublayers")
        names = ["blocks.0.hook_resid_pre"] + [
            name for layer in range(gpt2.cfg.n_layers)
            for name in (f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_resid_post")
            if name != f"blocks.{gpt2.cfg.n_layers - 1}.hook_resid_post"
        ]
        rows = [gpt2.unembed(gpt2.ln_final(r @ maps[n]))[0] for r, n in zip(resids, names, strict=True)]
    ref = torch.stack([*rows, logits[0]])
    prob, _ = _prob_rank(ref, ids)
    assert_close(tr.prob, prob.float(), atol=1e-6, rtol=1e-4)
    assert torch.equal(tr.rank, _reference_rank(ref, ids))


def test_jacobian_lens_matches_its_own_readout(tiny):
    from transformer_lens.tools.analysis import JacobianLens

    prompts = ["The capital of Spain is Madrid. Birds live in the trees. I saw six buses and one bus today."] * 2
    jl = JacobianLens.fit(tiny, prompts, corpus="test", show_progress=False, dim_batch=32)
    prompt = "Berlin is the capital of Germany. London is the capital of"
    ids = [tiny.tokenizer.encode(t, add_special_tokens=False)[0] for t in (" England", " Germany", " Paris")]
    tr = token_trajectory(tiny, prompt, tokens=ids, lens=jl, progress=False)
    assert tr.lens == "jacobian" and tr.row_lenses == ["logit", "jacobian", "jacobian", "jacobian", "model"]
    assert "Jacobian lens" in tr.plot().layout.title.text
    ro = jl.readout(tiny, prompt, return_full_logits=True)
    layers = sorted(ro.lens_logits)  # 0, 1, 2 (transported) and 3 (the model's output)
    ref = torch.stack([ro.lens_logits[layer] for layer in layers])
    prob, _ = _prob_rank(ref, ids)
    assert_close(tr.prob[1:], prob.float(), atol=1e-5, rtol=1e-4)
    assert torch.equal(tr.rank[1:], _reference_rank(ref, ids))
    plain = token_trajectory(tiny, prompt, tokens=ids, progress=False)
    assert torch.equal(tr.prob[0], plain.prob[0])  # the embedding row falls back to the identity
    assert not torch.allclose(tr.prob[1], plain.prob[1])


def test_set_total_counts_distinct_tokens_once(tiny):
    green = tiny.tokenizer.encode(" green", add_special_tokens=False)[0]
    tr = token_trajectory(tiny, PROMPT, tokens=[" green", green, " blue", " red"], progress=False)
    assert tr.token_ids[0] == tr.token_ids[1] == green
    assert torch.equal(tr.prob[..., 0], tr.prob[..., 1])
    assert_close(tr.set_prob, tr.prob[..., [0, 2, 3]].sum(-1))
    assert torch.equal(tr.set_rank, tr.rank.amin(-1))
    assert (tr.set_prob <= 1 + 1e-6).all()


def test_multi_token_strings_are_refused_or_truncated(tiny):
    n_pieces = len(tiny.tokenizer.encode(" París", add_special_tokens=False))
    assert n_pieces > 1
    with pytest.raises(OptionError, match=rf"' París' is not one token: it splits into {n_pieces} pieces .*multi_token='first'"):
        token_trajectory(tiny, PROMPT, tokens=[" Paris", " París"])
    tr = token_trajectory(tiny, PROMPT, tokens=[" Paris", " París", " 巴黎"], multi_token="first", progress=False)
    pieces = tiny.tokenizer.encode(" París", add_special_tokens=False)
    assert tr.token_ids[1] == pieces[0] and tr.truncated == [False, True, True]
    assert tr.token_inputs == [" Paris", " París", " 巴黎"]
    assert tr.token_strings[1] == tiny.tokenizer.decode(pieces[:1])
    assert "2 scored by their first piece" in repr(tr)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(tokens=[]), "tokens is empty"),
        (dict(tokens=" green"), r"write \[' green'\] for one token"),
        (dict(tokens=[1.5]), "string or an integer token id; got float"),
        (dict(tokens=[True]), "string or an integer token id; got bool"),
        (dict(tokens=[10**6]), r"outside the model's vocabulary; valid ids are 0\.\.4095"),  # the embedded vocabulary: 4,096 tokens
        (dict(tokens=[-1]), "outside the model's vocabulary"),
        (dict(tokens=[""]), "encodes to no token"),
        (dict(tokens=[" green"], multi_token="all"), "choose one of: 'error', 'first'"),
        (dict(tokens=[" green"], rows="layers"), "choose one of: 'blocks', 'sublayers'"),
        (dict(tokens=[" green"], positions=[99]), "out of range"),
        (dict(tokens=[" green"], lens="tuned"), "is not a lens"),
        (dict(tokens=[" green"], chunk_size=0), "chunk_size must be a positive integer"),
        (dict(tokens=[" green"], progress="no"), "progress='no' is not valid"),
    ],
)
def test_bad_options_raise_typed_errors(tiny, kwargs, match):
    with pytest.raises(LensInversionError, match=match):
        token_trajectory(tiny, PROMPT, **kwargs)


def test_batch_matches_single_prompts_and_chunks_agree(tiny):
    prompts = ["The sky is", "A cat sat on the mat while the dog"]
    batch = token_trajectory(tiny, prompts, tokens=TOKENS, chunk_size=2, progress=False)
    assert batch.batched and batch.prob.shape[:2] == (2, 5)
    for b, text in enumerate(prompts):
        one = token_trajectory(tiny, text, tokens=TOKENS, progress=False)
        n = one.prob.shape[1]
        assert_close(batch.prob[b, :, :n], one.prob)
        assert torch.equal(batch.rank[b, :, :n], one.rank)
        assert torch.isnan(batch.prob[b, :, n:]).all() and torch.isnan(batch.set_rank[b, :, n:]).all()
        assert batch.str_tokens[b][:n] == one.str_tokens
    assert batch.plot(index=0, position=-1).layout.title.text.endswith("(␣is)")


def test_layers_positions_and_cache_options(tiny):
    full = token_trajectory(tiny, PROMPT, tokens=TOKENS, progress=False)
    some = token_trajectory(tiny, PROMPT, tokens=TOKENS, layers=[-2], positions=slice(-3, None), progress=False)
    assert some.row_labels == ["embed", "2", "output"] and some.positions == full.positions[-3:]
    assert_close(some.prob, full.prob[[0, 3, 4]][:, -3:])
    _, cache = tiny.run_with_cache(tiny.to_tokens(PROMPT))
    cached = token_trajectory(tiny, PROMPT, tokens=TOKENS, cache=cache, progress=False)
    assert_close(cached.prob, full.prob)


def test_model_is_untouched_even_on_error():
    model = build_fresh("gpt2-native")
    seen = user_state(model)
    snap = Snapshot(model)
    token_trajectory(model, PROMPT, tokens=[5, 9], rows="sublayers", progress=False)
    with pytest.raises(OptionError):
        token_trajectory(model, PROMPT, tokens=[10**6])
    with pytest.raises(OptionError):
        token_trajectory(model, PROMPT, tokens=[5], lens=lambda resid, name: resid[..., :3])
    snap.assert_unchanged()
    assert seen  # the user's own hook stayed active


def test_plot_has_one_line_per_token_and_the_set(tiny):
    tr = token_trajectory(tiny, PROMPT, tokens=[*TOKENS, " París"], multi_token="first", progress=False)
    fig = tr.plot()
    assert [t.name for t in fig.data][-1] == "set total" and len(fig.data) == 5
    assert "(first piece)" in fig.data[3].name and "Logit lens" in fig.layout.title.text
    assert list(fig.data[0].x) == tr.row_labels
    assert_close(torch.tensor(fig.data[-1].y, dtype=torch.float32), tr.set_prob[:, -1])
    assert fig.layout.yaxis.type != "log"
    ranks = tr.plot(metric="rank", position=2)
    assert ranks.layout.yaxis.type == "log" and ranks.data[-1].name == "set best rank"
    assert list(ranks.data[1].y) == tr.rank[:, 2, 1].tolist()
    with pytest.raises(OptionError, match="choose one of: 'prob', 'rank'"):
        tr.plot(metric="kl")
    with pytest.raises(OptionError, match="position must be an integer in"):
        tr.plot(position=40)
    partial = token_trajectory(tiny, PROMPT, tokens=TOKENS, positions=[1, 2], progress=False)
    with pytest.raises(OptionError, match=r"scored positions: \[1, 2\]"):
        partial.plot(position=-1)


def test_to_json_round_trips(tiny):
    tr = token_trajectory(tiny, ["The sky is", "A cat sat on the"], tokens=TOKENS, progress=False)
    data = json.loads(tr.to_json())
    assert data["token_strings"] == TOKENS and data["prob"][0][0][-1] == [None] * 3  # padding is null
    back = TokenTrajectoryResult.from_json(tr.to_json())
    for name in ("prob", "rank", "set_prob", "set_rank", "tokens", "valid"):
        assert torch.equal(getattr(back, name).nan_to_num(-7), getattr(tr, name).nan_to_num(-7)), name
    for name in ("row_labels", "row_sites", "row_lenses", "positions", "str_tokens", "token_ids", "truncated"):
        assert getattr(back, name) == getattr(tr, name), name
