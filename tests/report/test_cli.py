"""`lens-inversion`: each subcommand writes HTML and JSON equal to the library; errors are one line."""

import json
import subprocess
import sys

import pytest
import torch

import lens_inversion as li
from lens_inversion.cli import main

PROMPT = "The sky is blue. The grass is"


@pytest.fixture(scope="module")
def tiny():
    return li.load_model("tiny")


def _run(capsys, *argv):
    code = main([*argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_lens_json_equals_library(tiny, tmp_path, capsys):
    out, js = tmp_path / "lens.html", tmp_path / "lens.json"
    code, _, err = _run(capsys, "lens", PROMPT, "--compare", "input", "--out", str(out), "--json", str(js), "--quiet")
    assert code == 0, err
    assert "Plotly.newPlot" in out.read_text()
    data = json.loads(js.read_text())
    expected = li.logit_lens(tiny, PROMPT, compare="input", progress=False)
    assert data["command"] == "lens" and data["result"]["compare"] == "input"
    torch.testing.assert_close(torch.tensor(data["result"]["kl"]), expected.kl, rtol=1e-5, atol=1e-6)
    assert data["result"]["str_tokens"] == expected.str_tokens


def test_invert_exact_prints_and_saves_the_recovered_text(tmp_path, capsys):
    js = tmp_path / "inv.json"
    code, out, err = _run(capsys, "invert", PROMPT, "--target", "resid_post.2[:, 1:, :]", "--out",
                          str(tmp_path / "inv.html"), "--json", str(js), "--quiet")
    assert code == 0, err
    assert out.strip() == PROMPT
    assert json.loads(js.read_text())["result"]["token_accuracy"] == 1.0


def test_attribute_and_ablate_write_their_files(tiny, tmp_path, capsys):
    js = tmp_path / "attr.json"
    code, _, err = _run(capsys, "attribute", PROMPT, "--method", "occlusion", "--out", str(tmp_path / "a.html"),
                        "--json", str(js), "--quiet")
    assert code == 0, err
    expected = li.attribute(tiny, PROMPT, method="occlusion", progress=False)
    torch.testing.assert_close(torch.tensor(json.loads(js.read_text())["result"]["scores"]), expected.scores,
                               rtol=1e-5, atol=1e-6)
    code, _, err = _run(capsys, "ablate", PROMPT, "--ablation", "mean", "--out", str(tmp_path / "ab.html"), "--quiet")
    assert code == 0, err
    assert "Plotly.newPlot" in (tmp_path / "ab.html").read_text()


def test_report_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report.html"
    code, _, err = _run(capsys, "report", PROMPT, "--out", str(out), "--steps", "2", "--layers", "0", "--quiet")
    assert code == 0, err
    assert out.read_text().count("Plotly.newPlot") == 6


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["lens", ""], "prompt is empty"),
        (["lens", "hi", "--model", "./no-such-model-dir"], "No model directory"),
        (["lens", "hi", "--compare", "sideways"], "invalid choice"),
        (["invert", "hi", "--target", "blocks.9.hook_resid_post"], "out of range"),
        (["invert", "hi", "--target", "resid_post.0[:, :, 99999:]"], "feature"),
        (["attribute", "hi", "--baseline", "nothing"], "baseline"),
        (["ablate", "hi", "--site", "logits"], "site"),
        (["report", "hi", "--out", "/no/such/folder/r.html"], "does not exist"),
        (["report", "hi", "--layers", "12"], "out of range"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_2(capsys, argv, says):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("lens-inversion: error:")]
    assert len(lines) == 1, err
    assert says.lower() in lines[0].lower()


def test_console_script_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "lens_inversion.cli", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for command in ("report", "lens", "invert", "attribute", "ablate"):
        assert command in done.stdout
    assert "examples:" in done.stdout
