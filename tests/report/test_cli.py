"""`lens-inversion`: each subcommand writes HTML and JSON equal to the library; errors are one line."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

import lens_inversion as li
import lens_inversion.inversion.exact as exact_module
from lens_inversion.cli import main
from lens_inversion.cli.parser import build_parser
from lens_inversion.errors import DeviceError, ModelNotFoundError

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
    _assert_page_explains_itself(out.read_text(), "Logit lens")
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
    page = (tmp_path / "inv.html").read_text()
    _assert_page_explains_itself(page, "exact inversion")
    assert "Plotly.newPlot" not in page  # no empty 'distance vs step' plot: exact search has no history
    assert "Verdict: <span style='color:#1a7f37'>verified</span>" in page
    assert "<th>original</th><th>recovered</th>" in page and "<th>margin</th>" in page
    assert page.count("<td>verified</td>") == 9  # BOS and the 8 prompt tokens: each reproduces, no rival does


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
    _assert_page_explains_itself((tmp_path / "ab.html").read_text(), "Ablation sweep")
    _assert_page_explains_itself((tmp_path / "a.html").read_text(), "Attribution")


def _assert_page_explains_itself(page: str, heading: str) -> None:
    assert f"<h1>{heading}" in page
    assert PROMPT in page and "<code>tiny</code>" in page  # the prompt and the model name
    assert "<p class='explanation'" in page


def test_gradient_invert_exits_0_with_its_verdict_and_the_text_comparison(tmp_path, capsys):
    out = tmp_path / "g.html"
    code, _, err = _run(capsys, "invert", "The sky", "--method", "embedding", "--steps", "3", "--out", str(out),
                        "--quiet")
    assert code == 0, err
    assert "lens-inversion: verdict: " in err
    page = out.read_text()
    _assert_page_explains_itself(page.replace("The sky", PROMPT, 1), "embedding inversion")
    assert "Plotly.newPlot" in page and "<th>recovered</th>" in page and "Verdict:" in page


def _perturbed_observe(monkeypatch):
    """Make every exact inversion see an activation no input produces: the observation plus noise."""
    real = exact_module.observe

    def observe(*args, **kwargs):
        observed = real(*args, **kwargs)
        noisy = tuple(v + 0.5 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0)) for v in observed.values)
        return dataclasses.replace(observed, values=noisy)

    monkeypatch.setattr(exact_module, "observe", observe)


def test_invert_of_an_activation_no_input_produces_exits_3_with_the_reason(tmp_path, capsys, monkeypatch):
    _perturbed_observe(monkeypatch)
    out = tmp_path / "inv.html"
    code, _, err = _run(capsys, "invert", "The sky", "--target", "resid_post.0", "--out", str(out), "--quiet")
    assert code == 3, err
    reason = [line for line in err.splitlines() if line.startswith("lens-inversion: not verified:")]
    assert len(reason) == 1 and "no input searched gives this activation" in reason[0], err
    assert "<td>not reproduced</td>" in out.read_text()


def test_report_with_an_unverified_exact_inversion_exits_3(tmp_path, capsys, monkeypatch):
    _perturbed_observe(monkeypatch)
    code, _, err = _run(capsys, "report", "The sky", "--out", str(tmp_path / "r.html"), "--steps", "2", "--layers", "0",
                        "--quiet")
    assert code == 3, err
    assert "lens-inversion: not verified: exact inversion of" in err


def test_json_dash_writes_json_to_stdout_and_the_wrote_line_to_stderr(tmp_path, capsys):
    code, out, err = _run(capsys, "lens", PROMPT, "--out", str(tmp_path / "l.html"), "--json", "-", "--quiet")
    assert code == 0, err
    assert json.loads(out)["command"] == "lens"
    assert "wrote" in err and "wrote" not in out


def test_help_imports_neither_torch_nor_plotly():
    code = ("import sys\nfrom lens_inversion.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'plotly', 'transformer_lens') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_model_fails_before_torch_loads_with_the_choices():
    code = ("import sys\nfrom lens_inversion.cli import main\nstatus = main(['lens', 'hi', '--model', 'tiny_llama'])\n"
            "print(status, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "Did you mean 'tiny-llama'?" in done.stderr
    for needed in ("'tiny'", "'tiny-untrained'", "'tiny-llama'", "config.json", "weights", "tokenizer"):
        assert needed in done.stderr


@pytest.mark.parametrize(("name", "says"), [("", "empty"), (" tiny", "Did you mean 'tiny'?"),
                                            ("TINY", "Did you mean 'tiny'?"), ("tiny_llama", "Did you mean 'tiny-llama'?"),
                                            ("no/such-model-here", "HF_HUB_OFFLINE"), ("a model", "valid hub id")])
def test_load_model_names_that_are_not_models(name, says, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="'tiny-untrained'") as raised:
        li.load_model(name)
    assert says in str(raised.value)


def test_load_model_file_and_empty_directory(tmp_path):
    (tmp_path / "weights.txt").write_text("not a model")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        li.load_model(str(tmp_path / "weights.txt"))
    with pytest.raises(ModelNotFoundError, match="no config.json and no weights and no tokenizer files"):
        li.load_model(str(tmp_path))


@pytest.mark.parametrize("device", ["meta", "nonsense", "cuda:7"])
def test_load_model_devices_that_cannot_run(device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    with pytest.raises(DeviceError, match="'cpu'"):
        li.load_model("tiny", device=device)


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"
        assert "exit status:" in sub.format_help()


def test_lazy_package_exports_every_public_name():
    import lens_inversion.report  # noqa: F401  (the submodule import must not shadow the function)

    assert callable(li.report) and set(li.__all__) == set(li._EXPORTS)
    assert all(getattr(li, name) is not None for name in li.__all__)


def test_report_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report.html"
    code, _, err = _run(capsys, "report", PROMPT, "--out", str(out), "--steps", "2", "--layers", "0", "--quiet")
    assert code == 0, err
    assert out.read_text().count("Plotly.newPlot") == 7  # with the shipped lenses beside the logit lens


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
        (["lens", "hi", "--model", "tiny_llama"], "did you mean 'tiny-llama'"),
        (["lens", "hi", "--device", "meta"], "holds no values"),
        (["lens", "hi", "--device", "nonsense"], "not a torch device"),
        (["lens", "hi", "--out", "-"], "--out - is not supported"),
        (["lens", "hi", "--top-k", "0"], "top_k"),
        (["lens", "hi", "--dtype", "float8"], "invalid choice"),
        (["lens", "hi", "--seed", "1.5"], "invalid int value"),
        (["lens", "hi", "--json", "/no/such/folder/x.json"], "does not exist"),
        (["report", "hi", "--steps", "0"], "gradient_steps"),
        (["report", "hi", "--ablation", "melt"], "invalid choice"),
        (["invert", "hi", "--method", "nope"], "invalid choice"),
        (["invert", "hi", "--method", "embedding", "--steps", "-3"], "steps"),
        (["invert", "hi", "--loss", "l7"], "invalid choice"),
        (["attribute", "hi", "--metric", "l9"], "invalid choice"),
        (["ablate", "hi", "--metric", "size"], "invalid choice"),
        (["ablate", "hi", "--ablation", "mean", "--reference", ""], "empty"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_2(capsys, argv, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a case that wrongly succeeds must not write into the checkout
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
    assert "3  finished but not verified" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only machine")
def test_cuda_on_a_cpu_only_machine_is_one_line_exit_2(capsys):
    code, _, err = _run(capsys, "lens", "hi", "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and "is not available" in err


def test_report_steps_default_matches_the_library():
    from lens_inversion.cli.parser import build_parser
    from lens_inversion.report import REPORT_GRADIENT_STEPS

    assert build_parser().parse_args(["report", "x"]).steps == REPORT_GRADIENT_STEPS
