"""li.evaluate_lens against a plain stacked loop written here: TransformerLens's run_with_cache for the
residuals, torch's log_softmax / kl_div / cross_entropy for the statistics, and the decoded text's UTF-8
length for bits per byte."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchrun_harness import PRELUDE, run_torchrun

import lens_inversion as li
from lens_inversion.corpus import lens_eval
from lens_inversion.hooks.adapter import adapter_for

pytestmark = pytest.mark.backend_generic

TEXTS = [
    "The sky is blue. The grass is green.",
    "Peter gave a ladder to Lily, and Lily thanked Peter.",
    "January, February, March, April.",
    "The opposite of light is dark. She paid ten coins for it. Rosa has a proud cat called Pip.",
    "A judge decides cases.",
]
SEQ = 16


@pytest.fixture(scope="module")
def tuned(tiny):
    return li.load_lens("tiny", model=tiny)


def _chunks(model) -> list[torch.Tensor]:
    """EOS doc EOS doc ... cut into SEQ-token rows, the last one shorter: the documented packing."""
    tok = model.tokenizer
    stream = []
    for text in TEXTS:
        stream += [tok.eos_token_id] + tok.encode(text, add_special_tokens=False)
    return [torch.tensor(stream[i:i + SEQ]) for i in range(0, len(stream), SEQ)]


def _plain(model, lenses) -> dict:
    """Every statistic from stacked [rows, pos, vocab] logits of each chunk, summed in float64."""
    adapter = adapter_for(model)
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers - 1)]
    out = {k: torch.zeros(len(lenses), len(names) + 1, dtype=torch.float64) for k in ("kl", "ent", "ce", "top1")}
    tokens = predicted = n_bytes = 0
    for chunk in _chunks(model):
        logits, cache = model.run_with_cache(chunk[None])
        final = logits[0].log_softmax(-1)
        for i, lens in enumerate(lenses):
            stacked = []
            for j, name in enumerate(names):
                resid = cache[name]
                if lens != "logit":
                    key = (li.Site.RESID_PRE, 0) if j == 0 else (li.Site.RESID_POST, j - 1)
                    resid = lens.translator_for(resid, *key)
                stacked.append(adapter.lens_logits(resid)[0])
            stacked.append(logits[0])
            logq = torch.stack(stacked).float().log_softmax(-1)  # [rows, pos, vocab]
            out["kl"][i] += F.kl_div(logq, final.expand_as(logq), log_target=True, reduction="none").sum((1, 2)).double()
            out["ent"][i] += -(logq.exp() * logq).sum((1, 2)).double()
            out["top1"][i] += (logq.argmax(-1) == final.argmax(-1)).sum(1).double()
            nxt = chunk[1:]
            out["ce"][i] += torch.stack([F.cross_entropy(lq[:-1], nxt, reduction="sum") for lq in logq]).double()
        tokens += len(chunk)
        predicted += len(chunk) - 1
        n_bytes += len(model.tokenizer.decode(chunk[1:]).encode("utf-8")) - sum(
            len(model.tokenizer.decode([t]).encode()) for t in chunk[1:].tolist() if t == model.tokenizer.eos_token_id)
    return {"kl": out["kl"] / tokens, "entropy": out["ent"] / tokens, "top1": out["top1"] / tokens,
            "ce": out["ce"] / predicted, "bpb": out["ce"] / math.log(2) / n_bytes,
            "tokens": tokens, "predicted": predicted, "bytes": n_bytes}


def test_every_statistic_equals_a_plain_stacked_loop(tiny, tuned):
    got = li.evaluate_lens(tiny, TEXTS, lenses=["logit", tuned], seq_len=SEQ, batch_size=3, progress=False)
    ref = _plain(tiny, ["logit", tuned])
    assert (got.tokens, got.predicted, got.bytes) == (ref["tokens"], ref["predicted"], ref["bytes"])
    assert got.rows == ["embed", "0", "1", "2", "output"] and got.lenses == ["logit", "tuned"]
    for mine, theirs in [("kl", "kl"), ("entropy", "entropy"), ("top1_agreement", "top1"),
                         ("cross_entropy", "ce"), ("bits_per_byte", "bpb")]:
        torch.testing.assert_close(getattr(got, mine), ref[theirs], rtol=2e-5, atol=2e-5, msg=mine)
    assert float(got.kl[:, -1].abs().max()) < 1e-6  # the output row is the model itself
    assert got.row_lenses[1] == ["tuned", "tuned", "tuned", "tuned", "model"]


def test_bits_per_byte_counts_the_bytes_of_the_predicted_text(tiny):
    text = "Héllo wörld — the sky is blue."
    got = li.evaluate_lens(tiny, [text], packing="pad", progress=False)
    assert got.bytes_method == "byte-level"
    assert got.bytes == len(text.encode("utf-8"))  # BOS predicts the first token: every byte is predicted once
    ids = tiny.tokenizer.encode(text, add_special_tokens=False)
    with torch.no_grad():
        loss = F.cross_entropy(tiny(torch.tensor([[tiny.tokenizer.bos_token_id, *ids]]))[0, :-1], torch.tensor(ids),
                               reduction="sum")
    assert float(got.bits_per_byte[0, -1]) == pytest.approx(float(loss) / math.log(2) / len(text.encode()), rel=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batches_equal_each_document_run_alone(tiny, side):
    alone = li.evaluate_lens(tiny, TEXTS, packing="pad", batch_size=1, progress=False)
    padded = li.evaluate_lens(tiny, TEXTS, packing="pad", batch_size=4, padding_side=side, progress=False)
    assert (padded.tokens, padded.predicted, padded.bytes) == (alone.tokens, alone.predicted, alone.bytes)
    assert padded.run.items == 2 and alone.run.items == len(TEXTS)
    for name in ("kl", "cross_entropy", "entropy", "top1_agreement"):
        torch.testing.assert_close(getattr(padded, name), getattr(alone, name), rtol=1e-5, atol=1e-5)
    if side == "left":
        assert [v.name for v in padded.checks] == ["left_padding"] and padded.checks[0].passed


def test_an_interrupted_run_resumes_to_the_same_result(tiny, tmp_path, monkeypatch):
    whole = li.evaluate_lens(tiny, TEXTS, seq_len=8, batch_size=1, progress=False)
    ckpt = tmp_path / "eval.ckpt"
    real = lens_eval._Scorer.__call__
    calls = []

    def dying(self, batch):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(lens_eval._Scorer, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        li.evaluate_lens(tiny, TEXTS, seq_len=8, batch_size=1, progress=False, checkpoint=ckpt, checkpoint_every=2)
    monkeypatch.setattr(lens_eval._Scorer, "__call__", real)
    resumed = li.evaluate_lens(tiny, TEXTS, seq_len=8, batch_size=1, progress=False, checkpoint=ckpt,
                               checkpoint_every=2)
    assert resumed.run.resumed_items == 4
    assert torch.equal(resumed.kl, whole.kl) and torch.equal(resumed.bits_per_byte, whole.bits_per_byte)
    with pytest.raises(li.OptionError, match=r"other options \(seq_len: 8 there, 16 here"):
        li.evaluate_lens(tiny, TEXTS, seq_len=16, batch_size=1, progress=False, checkpoint=ckpt)
    with pytest.raises(li.OptionError, match="another corpus"):
        li.evaluate_lens(tiny, TEXTS[::-1], seq_len=8, batch_size=1, progress=False, checkpoint=ckpt)


@pytest.mark.parametrize(("options", "pattern"), [
    ({"lenses": "logit"}, r"lenses must be a non-empty list"),
    ({"lenses": []}, r"lenses must be a non-empty list"),
    ({"lenses": ["tuned"]}, r"lens='tuned' is not a lens; give 'logit'"),
    ({"packing": "stack"}, r"packing.*'pack', 'pad'"),
    ({"padding_side": "left"}, r"padding_side='left' needs packing='pad'"),
    ({"seq_len": 10**6}, r"seq_len"),
    ({"max_tokens": 0}, r"max_tokens"),
    ({"checkpoint_every": 0}, r"checkpoint_every"),
])
def test_bad_options_are_refused_before_the_model_runs(tiny, options, pattern):
    with pytest.raises(li.OptionError, match=pattern):
        li.evaluate_lens(tiny, TEXTS, progress=False, **options)


def test_a_corpus_without_tokens_is_refused(tiny):
    with pytest.raises(li.OptionError, match="no tokens"):
        li.evaluate_lens(tiny, ["", ""], packing="pad", progress=False)


SCRIPT = PRELUDE + """
import lens_inversion as li
model = li.load_model("tiny")
TEXTS = TEXTS_REPR
got = li.evaluate_lens(model, TEXTS, lenses=["logit", li.load_lens("tiny", model=model)], seq_len=8, batch_size=1,
                       progress=False)
write({"kl": got.kl.tolist(), "bpb": got.bits_per_byte.tolist(), "tokens": got.tokens, "bytes": got.bytes,
       "top1": got.top1_agreement.tolist(), "world": got.run.world_size})
""".replace("TEXTS_REPR", repr(TEXTS))


def test_two_gloo_processes_equal_one(tiny, tuned, tmp_path):
    launch = run_torchrun(SCRIPT, tmp_path, nproc=2)
    assert launch.returncode == 0, launch.why()
    one = li.evaluate_lens(tiny, TEXTS, lenses=["logit", tuned], seq_len=8, batch_size=1, progress=False)
    for out in launch.outputs.values():
        assert out["world"] == 2 and (out["tokens"], out["bytes"]) == (one.tokens, one.bytes)
        assert out["top1"] == one.top1_agreement.tolist()  # counts: exact
        torch.testing.assert_close(torch.tensor(out["kl"], dtype=torch.float64), one.kl, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(torch.tensor(out["bpb"], dtype=torch.float64), one.bits_per_byte, rtol=1e-6, atol=1e-9)
