"""The tuned lens: translators by hand, training against independent computations, files.

The format tests use the `tuned-lens` 0.2 package itself. Install it without its
dependencies (it needs none of them for its lens module): `pip install --no-deps tuned-lens==0.2.0`
(`make install-dev` does). Under TransformerLens 4 the package's HookedTransformer check
raises, which is the very bug this project works around; the tests steer it to its plain
Hugging Face path.
"""

import json
import warnings

import pytest
import torch
from _tolerances import assert_close
from untouched import Snapshot

import lens_inversion as li
from lens_inversion.errors import OptionError, UnsupportedModelError
from lens_inversion.hooks.adapter import adapter_for
from lens_inversion.hooks.fingerprint import unembed_hash
from lens_inversion.hooks.preserve import preserved
from lens_inversion.hooks.sites import Site
from lens_inversion.lens import tuned_training
from lens_inversion.lens.token_stream import token_chunks
from lens_inversion.lens.tuned import LensMismatchWarning, TunedLens
from lens_inversion.models.corpus import documents
from lens_inversion.models.loader import ASSETS

TINY_DIR = ASSETS / "tiny"
SMALL = dict(steps=4, tokens_per_step=512, seq_len=64, progress=False)


@pytest.fixture(scope="module")
def corpus():
    return list(documents(300, seed=0))


@pytest.fixture(scope="module")
def held_out():
    return (TINY_DIR / "heldout.txt").read_text().splitlines()[:20]


@pytest.fixture(scope="module")
def hf_tiny():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(TINY_DIR)).eval()  # local directory  # offline-ok


def _randomise(lens: TunedLens, seed: int = 0, scale: float = 0.05) -> TunedLens:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return lens


def _package():
    """The tuned-lens package's lens module, steered to its Hugging Face path; fail with how to install it."""
    try:
        import tuned_lens.model_surgery as surgery
        import tuned_lens.nn.unembed as unembed
        from tuned_lens.nn.lenses import TunedLens as PkgLens
    except ImportError as error:
        pytest.fail(f"The format tests need the tuned-lens package: pip install --no-deps tuned-lens==0.2.0 "
                    f"(make install-dev installs it). Import failed: {error}")
    surgery._transformer_lens_available = False  # its isinstance(model, tl.HookedTransformer) raises on TL 4
    unembed._transformer_lens_available = False
    return PkgLens, unembed.Unembed


# ----- translators ------------------------------------------------------------------------
def test_translator_by_hand_and_rows(tiny):
    lens = _randomise(TunedLens.from_model(tiny, sublayers=True))
    h = torch.randn(2, 5, 128)
    for site, layer, table, index in [(Site.RESID_PRE, 0, "layer", 0), (Site.RESID_POST, 0, "layer", 1),
                                      (Site.RESID_POST, 2, "layer", 3), (Site.RESID_MID, 3, "sub", 3)]:
        linear = (lens.layer_translators if table == "layer" else lens.sublayer_translators)[index]
        expected = h + h @ linear.weight.T + linear.bias
        assert_close(lens.translator_for(h, site, layer), expected)
    assert lens.translator_for(h, Site.RESID_POST, 3) is None  # the last block's output is the model's
    assert lens.translator_for(h, Site.LOGITS, None) is None
    plain = TunedLens.from_model(tiny)
    assert plain.translator_for(h, Site.RESID_MID, 1) is None
    assert plain.translator_for(h.double(), Site.RESID_PRE, 0).dtype == torch.float64


def test_identity_at_init_is_the_logit_lens(tiny):
    adapter = adapter_for(tiny)
    lens = TunedLens.from_model(tiny)
    run = adapter.run(torch.tensor([[0, 5, 9, 31, 7]]), capture=lens.row_keys(), need_logits=True)
    with torch.no_grad():
        for key in lens.row_keys():
            out = lens.translator_for(run[key], *key)
            assert torch.equal(out, run[key])
            assert torch.equal(adapter.lens_logits(out), adapter.lens_logits(run[key]))


# ----- training ---------------------------------------------------------------------------
def test_training_beats_the_logit_lens_on_held_out_text(tiny, corpus, held_out):
    snapshot = Snapshot(tiny)
    lens = TunedLens.train(tiny, corpus, steps=12, tokens_per_step=2048, seq_len=128, held_out=held_out,
                           progress=False)
    snapshot.assert_unchanged()
    kl = lens.metadata["held_out"]
    assert kl["rows"] == ["embed", "0", "1", "2"] and kl["tokens"] > 500
    for row, tuned, logit in zip(kl["rows"], kl["kl"], kl["logit_kl"], strict=True):
        assert tuned < logit, f"row {row}: tuned {tuned:.3f} >= logit {logit:.3f}"
    assert lens.metadata["tokens_seen"] == 12 * 2048
    assert lens.metadata["training"]["optimizer"] == "sgd"
    lens.check_model(tiny)  # bound to the model it was trained on


@pytest.mark.parametrize("loss", ["kl", "cross_entropy"])
def test_loss_and_gradient_match_hf_hidden_states(tiny, hf_tiny, loss):
    """Our summed loss and its gradient against F.kl_div / F.cross_entropy on HF's own hidden states."""
    adapter = adapter_for(tiny)
    lens = _randomise(TunedLens.from_model(tiny)).requires_grad_(True)
    tokens = next(iter(token_chunks(adapter, list(documents(40)), seq_len=48))).reshape(2, 24)
    with preserved(tiny):  # frozen model parameters, as in training
        ours = tuned_training._accumulate(adapter, lens, tokens, loss, n_tokens=1)
    ours_grads = [p.grad.clone() for p in lens.parameters()]

    ref = _randomise(TunedLens.from_model(tiny)).requires_grad_(True)
    with torch.no_grad():
        out = hf_tiny(tokens, output_hidden_states=True)
    head, norm = hf_tiny.get_output_embeddings(), hf_tiny.transformer.ln_f
    expected = []
    for i, h in enumerate(out.hidden_states[:-1]):
        linear = ref.layer_translators[i]
        z = head(norm(h + h @ linear.weight.T + linear.bias))
        if loss == "kl":
            value = torch.nn.functional.kl_div(z.log_softmax(-1), out.logits.log_softmax(-1), log_target=True,
                                               reduction="sum")
        else:
            value = torch.nn.functional.cross_entropy(z[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(),
                                                      reduction="sum")
        value.backward()
        expected.append(float(value.detach()))
    assert_close(torch.tensor(ours), torch.tensor(expected), rtol=1e-4, atol=1e-3)
    for got, want in zip(ours_grads, (p.grad for p in ref.parameters()), strict=True):
        assert_close(got, want, rtol=1e-3, atol=1e-4)


def _weights(lens: TunedLens) -> dict:
    return {k: v.clone() for k, v in lens.state_dict().items()}


def test_checkpoint_resume_is_bit_identical(tiny, corpus, tmp_path, monkeypatch):
    options = dict(SMALL, steps=5, optimizer="adam", shuffle_buffer=8, seed=3)
    straight = _weights(TunedLens.train(tiny, corpus, **options))
    checkpoint = tmp_path / "run.ckpt"
    real_step = tuned_training._train_step

    def interrupted(adapter, lens, optimizer, batch, opts, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(adapter, lens, optimizer, batch, opts, step)

    snapshot = Snapshot(tiny)
    monkeypatch.setattr(tuned_training, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        TunedLens.train(tiny, corpus, checkpoint=checkpoint, checkpoint_every=2, **options)
    snapshot.assert_unchanged()
    monkeypatch.setattr(tuned_training, "_train_step", real_step)
    assert torch.load(checkpoint, weights_only=True)["run"]["step"] == 2
    resumed = TunedLens.train(tiny, corpus, checkpoint=checkpoint, checkpoint_every=2, **options)
    assert resumed.metadata["tokens_seen"] == 5 * 512
    for key, value in straight.items():
        assert torch.equal(resumed.state_dict()[key], value), key
    with pytest.raises(OptionError, match="other options.*steps: 5 there, 6 here"):
        TunedLens.train(tiny, corpus, checkpoint=checkpoint, **dict(options, steps=6))
    with pytest.raises(OptionError, match="another corpus"):
        TunedLens.train(tiny, corpus[50:], checkpoint=checkpoint, **options)


def test_seed_determinism_and_corpus_passes(tiny, corpus):
    options = dict(SMALL, shuffle_buffer=16)
    a, b = (_weights(TunedLens.train(tiny, corpus, seed=1, **options)) for _ in range(2))
    c = _weights(TunedLens.train(tiny, corpus, seed=2, **options))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    small = corpus[:14]  # about 1,000 tokens: two steps per pass
    lens = TunedLens.train(tiny, small, **dict(SMALL, steps=5))
    assert lens.metadata["corpus_passes"] >= 2


def test_sublayers_train_and_read(tiny, corpus):
    lens = TunedLens.train(tiny, corpus, sublayers=True, **dict(SMALL, steps=2))
    assert len(lens.row_keys()) == 8 and lens.sublayer_translators is not None
    assert set(lens.metadata["final_loss"]) == {"embed", "0 attn", "0 mlp", "1 attn", "1 mlp", "2 attn", "2 mlp",
                                                "3 attn"}
    assert lens.translator_for(torch.zeros(1, 128), Site.RESID_MID, 3) is not None


# ----- files ------------------------------------------------------------------------------
def test_format_written_from_the_spec(tiny, tmp_path):
    lens = _randomise(TunedLens.from_model(tiny, sublayers=True))
    lens.metadata["model"] = "tiny"
    lens.save(tmp_path / "lens")
    config = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert config == {"base_model_name_or_path": "tiny", "d_model": 128, "num_hidden_layers": 4, "bias": True,
                      "base_model_revision": None, "unembed_hash": unembed_hash(adapter_for(tiny)),
                      "lens_type": "linear_tuned_lens"}
    params = torch.load(tmp_path / "lens" / "params.pt", weights_only=True)
    assert sorted(params) == sorted(f"{i}.{w}" for i in range(4) for w in ("weight", "bias"))
    assert params["2.weight"].dtype == torch.float32 and params["2.weight"].shape == (128, 128)
    back = TunedLens.load(tmp_path / "lens", model=tiny)
    for key, value in lens.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    assert back.metadata["fingerprint"] == lens.metadata["fingerprint"]

    # A hand-written artifact of the spec (no metadata file) loads and binds to the model.
    plain = tmp_path / "plain"
    plain.mkdir()
    weights = {f"{i}.{w}": torch.full((128, 128) if w == "weight" else (128,), 0.01 * i)
               for i in range(4) for w in ("weight", "bias")}
    torch.save(weights, plain / "params.pt")
    (plain / "config.json").write_text(json.dumps({"base_model_name_or_path": "x", "d_model": 128,
                                                   "num_hidden_layers": 4}))
    read = TunedLens.load(plain, model=tiny)
    h = torch.randn(3, 128)
    assert_close(read.translate(h, 2), h + h @ weights["2.weight"].T + weights["2.bias"])
    assert read.metadata["model"] == "x" and "fingerprint" in read.metadata


def test_the_tuned_lens_package_writes_what_we_read_and_reads_what_we_write(tiny, hf_tiny, tmp_path):
    PkgLens, Unembed = _package()
    theirs = PkgLens.from_model(hf_tiny)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in theirs.layer_translators.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    theirs.save(tmp_path / "theirs")
    assert unembed_hash(adapter_for(tiny)) == Unembed(hf_tiny).unembedding_hash()

    ours = TunedLens.load(tmp_path / "theirs", model=tiny)
    h = torch.randn(2, 7, 128)
    with torch.no_grad():
        for i in range(4):
            assert_close(ours.translate(h, i), theirs.transform_hidden(h, i), atol=1e-6, rtol=0)

    mine = _randomise(TunedLens.from_model(tiny), seed=4)
    mine.save(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its TunedLensConfig may log about keys it does not know
        back = PkgLens.from_unembed_and_pretrained(Unembed(hf_tiny), str(tmp_path / "ours"))
    with torch.no_grad():
        for i in range(4):
            assert_close(back.transform_hidden(h, i), mine.translate(h, i), atol=1e-6, rtol=0)
        assert_close(back(h, 1), adapter_for(tiny).lens_logits(mine.translate(h, 1)), atol=1e-4, rtol=1e-5)


# ----- refusals ---------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "match"), [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(loss="mse"), "loss='mse' is not valid; choose one of: 'kl', 'cross_entropy'"),
    (dict(optimizer="lbfgs"), "choose one of: 'sgd', 'adam'"),
    (dict(momentum=1.0), "momentum must be a finite number in"),
    (dict(tokens_per_step=1000), "multiple of seq_len=64.*960 or 1024"),
    (dict(seq_len=4096), "longer than the model's context"),
    (dict(sublayers="yes"), "sublayers='yes' is not valid"),
    (dict(progress=1), "progress=1 is not valid"),
])
def test_bad_options(tiny, corpus, options, match):
    with pytest.raises(OptionError, match=match):
        TunedLens.train(tiny, corpus, **{**SMALL, **options})


def test_unknown_option_is_a_type_error(tiny, corpus):
    with pytest.raises(TypeError, match="learning_rate"):
        TunedLens.train(tiny, corpus, learning_rate=1.0)


def test_bad_corpora(tiny, tmp_path):
    with pytest.raises(OptionError, match=r"has \d+ tokens .* needs tokens_per_step=512"):
        TunedLens.train(tiny, ["The sky is blue."], **SMALL)
    with pytest.raises(OptionError, match="not an existing file"):
        TunedLens.train(tiny, str(tmp_path / "missing.txt"), **SMALL)
    with pytest.raises(OptionError, match="cannot be a int"):
        TunedLens.train(tiny, 3, **SMALL)
    with pytest.raises(OptionError, match="one-shot iterator and ran out"):
        TunedLens.train(tiny, (d for d in documents(14)), **dict(SMALL, steps=5))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(OptionError, match="line 2 has no string field 'text'"):
        TunedLens.train(tiny, bad, **SMALL)


def test_token_chunks_from_files(tiny, tmp_path):
    adapter = adapter_for(tiny)
    (tmp_path / "a.txt").write_text("The sky is blue.\nThe grass is green.\n\nA cat sat.\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "The sun is bright."}) + "\n")
    files = [tmp_path / "a.txt", tmp_path / "b.jsonl"]
    stream = torch.cat(list(token_chunks(adapter, files, seq_len=1)))
    encode = adapter.tokenizer.encode
    docs = ["The sky is blue.\nThe grass is green.", "A cat sat.", "The sun is bright."]
    expected = [t for d in docs for t in [adapter.tokenizer.eos_token_id, *encode(d, add_special_tokens=False)]]
    assert stream.tolist() == expected
    chunks = list(token_chunks(adapter, files, seq_len=4))
    assert all(len(c) == 4 for c in chunks) and len(chunks) == len(expected) // 4
    assert [c.tolist() for c in token_chunks(adapter, docs, seq_len=4)] == [c.tolist() for c in chunks]


def test_wrong_model_and_fingerprints(tiny, gpt2, tmp_path):
    lens = TunedLens.from_model(tiny)
    with pytest.raises(UnsupportedModelError, match="d_model=128 and 4 layers; the model has d_model=64"):
        lens.check_model(gpt2)
    untrained = li.load_model("tiny-untrained", device="cpu")
    with pytest.raises(OptionError, match="trained for another model"):
        lens.check_model(untrained)
    lens.save(tmp_path / "lens")
    (tmp_path / "lens" / "lens_inversion.json").unlink()  # a plain tuned-lens artifact: only unembed_hash
    with pytest.warns(LensMismatchWarning, match="unembed_hash"):
        TunedLens.load(tmp_path / "lens", model=untrained)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TunedLens.load(tmp_path / "lens", model=tiny)


def test_bad_directories(tmp_path):
    with pytest.raises(OptionError, match="no such directory"):
        TunedLens.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="config.json and params.pt missing"):
        TunedLens.load(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "params.pt").write_bytes(b"junk")
    with pytest.raises(OptionError, match="as JSON"):
        TunedLens.load(bad)
    (bad / "config.json").write_text(json.dumps({"d_model": 8, "num_hidden_layers": 2}))
    with pytest.raises(OptionError, match="as a PyTorch state dict"):
        TunedLens.load(bad)
    torch.save({"0.weight": torch.zeros(8, 8), "0.bias": torch.zeros(8)}, bad / "params.pt")
    with pytest.raises(OptionError, match=r"missing keys \['1.bias', '1.weight'\]"):
        TunedLens.load(bad)
    torch.save({f"{i}.{w}": torch.zeros(4) for i in range(2) for w in ("weight", "bias")}, bad / "params.pt")
    with pytest.raises(OptionError, match=r"'0.weight' has shape \(4,\) but should have shape \(8, 8\)"):
        TunedLens.load(bad)
    (bad / "config.json").write_text(json.dumps({"d_model": "8", "num_hidden_layers": 2}))
    with pytest.raises(OptionError, match="'d_model' as a positive integer"):
        TunedLens.load(bad)


def test_read_out_through_the_logit_lens(tiny):
    """li.logit_lens(lens=TunedLens) decodes each row through its translator: KL against a direct computation."""
    lens = _randomise(TunedLens.from_model(tiny, sublayers=True), scale=0.02)
    adapter = adapter_for(tiny)
    result = li.logit_lens(tiny, "The sky is blue. The sky is", lens=lens, rows="sublayers", progress=False)
    assert result.lens == "tuned" and set(result.row_lenses[:-1]) == {"tuned"}
    tokens = result.tokens[None]
    run = adapter.run(tokens, capture=lens.row_keys(), need_logits=True)
    final = run.logits[0].float().log_softmax(-1)
    with torch.no_grad():
        for row, key in enumerate(lens.row_keys()):
            z = adapter.lens_logits(lens.translator_for(run[key], *key))[0].float().log_softmax(-1)
            kl = (final.exp() * (final - z)).sum(-1)
            assert_close(result.kl[row], kl, rtol=1e-4, atol=1e-5)
