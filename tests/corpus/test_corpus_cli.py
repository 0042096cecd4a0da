"""The corpus commands: their JSON equals the Python API's result; bad arguments exit 2 with one line."""

import json
import re

import pytest
import torch

import lens_inversion as li
from lens_inversion.cli import main

pytestmark = pytest.mark.backend_generic

TEXT = "The sky is blue. The grass is green.\n\nPeter gave a ladder to Lily, and Lily thanked Peter.\n"


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def test_eval_lens_json_equals_evaluate_lens(tiny, corpus_file, tmp_path, capsys):
    out = tmp_path / "e.json"
    status = main(["eval-lens", "--corpus", str(corpus_file), "--lens", "logit", "tuned", "--seq-len", "8",
                   "--json", str(out), "--out", str(tmp_path / "e.html"), "--quiet"])
    assert status == 0
    got = json.loads(out.read_text())["result"]
    ref = li.evaluate_lens(tiny, corpus_file, lenses=["logit", li.load_lens("tiny", model=tiny)], seq_len=8,
                           progress=False)
    assert got["lenses"] == ["logit", "tuned"] and got["tokens"] == ref.tokens
    torch.testing.assert_close(torch.tensor(got["bits_per_byte"], dtype=torch.float64), ref.bits_per_byte)
    assert "bits per byte over" in capsys.readouterr().err
    assert (tmp_path / "e.html").stat().st_size > 100_000  # plotly.js inside


def test_train_lens_saves_the_lens_train_gives(tiny, corpus_file, tmp_path):
    status = main(["train-lens", "--corpus", str(corpus_file), "--steps", "2", "--tokens-per-step", "16",
                   "--seq-len", "8", "--out", str(tmp_path / "lens"), "--quiet"])
    assert status == 0
    saved = li.load_lens(tmp_path / "lens", model=tiny)
    ref = li.TunedLens.train(tiny, corpus_file, steps=2, tokens_per_step=16, seq_len=8, progress=False)
    for a, b in zip(saved.state_dict().values(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("argv", "pattern"), [
    (["eval-lens", "--corpus", "missing.txt"], r"--corpus 'missing.txt' is not an existing file"),
    (["eval-lens", "--corpus", "CORPUS", "--lens", "tuned2"], r"--lens 'tuned2' is not a lens; choose logit"),
    (["invert-corpus", "--corpus", "CORPUS", "--tokens", "0"], r"n_tokens"),
])
def test_bad_arguments_exit_2_with_one_line(corpus_file, capsys, argv, pattern):
    argv = [str(corpus_file) if a == "CORPUS" else a for a in argv]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
