"""The HTML report: its numbers are the capability functions' numbers, its HTML is offline and escaped."""

import dataclasses
import re

import pytest
import torch

import lens_inversion as li

PROMPT = "The sky is blue. The grass is"


@pytest.fixture(scope="module")
def tiny():
    return li.load_model("tiny")


@pytest.fixture(scope="module")
def written(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    return li.report(tiny, PROMPT, path=path, gradient_steps=20, progress=False)


def test_report_numbers_equal_the_capability_functions(tiny, written):
    lens = li.logit_lens(tiny, PROMPT, progress=False)
    torch.testing.assert_close(written.lens_final.kl, lens.kl, rtol=1e-5, atol=1e-6)
    lens_in = li.logit_lens(tiny, PROMPT, compare="input", progress=False)
    torch.testing.assert_close(written.lens_input.rank, lens_in.rank)
    occlusion = li.attribute(tiny, PROMPT, method="occlusion", progress=False)
    torch.testing.assert_close(written.attributions["occlusion"].scores, occlusion.scores, rtol=1e-5, atol=1e-6)
    sweep = li.ablation_sweep(tiny, PROMPT, progress=False)
    torch.testing.assert_close(written.ablation.values, sweep.values, rtol=1e-4, atol=1e-6)


def test_report_inverts_first_middle_and_last_block_with_both_methods(tiny, written):
    n = tiny.cfg.n_layers
    assert sorted({row.layer for row in written.inversions}) == sorted({0, n // 2, n - 1})
    assert {row.method for row in written.inversions} == {"embedding", "exact"}
    true = tiny.to_tokens(PROMPT)
    for row in written.inversions:
        measured = float((row.result.tokens[:, 1:] == true[:, 1:]).float().mean())  # BOS is not scored
        assert row.result.token_accuracy == pytest.approx(measured)
        if row.method == "exact":
            assert row.result.token_accuracy == 1.0


def test_report_html_is_self_contained_with_every_section(written):
    page = written.path.read_text(encoding="utf-8")
    # lens final ×2, lens input ×2, the shipped lenses beside the logit lens, inversion bars, ablation
    assert page.count("Plotly.newPlot") == 7
    # plotly.js embedded exactly once, and nothing fetched from the network.
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    assert not re.search(r"<script[^>]+src=[\"']https?://", page)
    for heading in ("Logit lens against the final output", "Logit lens against the input",
                    "Logit lens beside trained lenses", "Attribution of the next-token prediction", "Input inversion from each layer",
                    "ablation of each residual-stream cell"):
        assert heading in page
    exact_text = next(r.result.text for r in written.inversions if r.method == "exact")
    assert exact_text == PROMPT


def test_report_escapes_the_prompt(tiny, tmp_path):
    prompt = "<script>alert(1)</script> & more"
    res = li.report(tiny, prompt, path=tmp_path / "r.html", gradient_steps=1, inversion_layers=[0], progress=False)
    page = res.path.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        (dict(inversion_layers=[9]), li.TargetError, "out of range"),
        (dict(inversion_layers=[]), li.OptionError, "inversion_layers is empty"),
        (dict(gradient_steps=0), li.OptionError, "gradient_steps"),
        (dict(ablation="melt"), li.OptionError, "melt"),
        (dict(path="/nonexistent-folder/r.html"), li.OptionError, "does not exist"),
    ],
)
def test_report_bad_options_raise_clear_errors(tiny, tmp_path, options, error, says):
    options = {"path": tmp_path / "r.html", "progress": False, **options}
    with pytest.raises(error, match=says):
        li.report(tiny, PROMPT, **options)


@pytest.mark.parametrize("prompt", ["", "   ", ["a", "b"]])
def test_report_takes_one_non_empty_prompt(tiny, tmp_path, prompt):
    with pytest.raises(li.OptionError, match="one non-empty prompt"):
        li.report(tiny, prompt, path=tmp_path / "r.html", progress=False)


def test_healthy_report_says_everything_verified(written):
    assert written.problems == []
    assert all(row.result.verdict.verified for row in written.inversions if row.method == "exact")
    assert "Every exact inversion verified and every self-check passed." in written.path.read_text(encoding="utf-8")


def test_a_broken_inversion_shows_as_failed(tiny, tmp_path, monkeypatch):
    """Exact inversion handed an activation no input produces: red row, reason, and a summary line."""
    from lens_inversion.inversion import exact

    real_observe = exact.observe

    def perturbed(*args, **kwargs):
        seen = real_observe(*args, **kwargs)
        noise = [v + 0.5 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for v in seen.values]
        return dataclasses.replace(seen, values=tuple(noise))

    monkeypatch.setattr(exact, "observe", perturbed)
    with pytest.warns(li.InversionWarning, match="not verified"):
        res = li.report(tiny, PROMPT, path=tmp_path / "r.html", inversion_layers=[0], gradient_steps=5, progress=False)
    row = next(r for r in res.inversions if r.method == "exact")
    assert row.result.verdict.status == "not verified"
    assert res.problems and res.problems[0].startswith("exact inversion of block 0 is not verified:")
    page = res.path.read_text(encoding="utf-8")
    failed_rows = re.findall(r'<tr class="li-failed">(.*?)</tr>', page)
    assert any("exact search" in r and "not verified" in r and "reproduced nothing" in r for r in failed_rows)
    assert any("exact inversion of block 0 is not verified" in r for r in failed_rows)  # the summary line
    assert "Every exact inversion verified" not in page


def test_report_compares_the_shipped_lenses_with_the_logit_lens(tiny, written):
    comparison = written.lens_comparison
    assert comparison.lenses[0] == "logit" and set(comparison.lenses[1:]) == {"tuned", "jacobian"}
    alone = li.compare_lenses(tiny, PROMPT, lenses=[li.load_lens("tiny", kind=k) for k in comparison.lenses[1:]])
    torch.testing.assert_close(comparison.kl, alone.kl, rtol=1e-5, atol=1e-6)
    page = written.path.read_text(encoding="utf-8")
    assert f"{float(comparison.kl[1, 1]):.4g}" in page  # the table shows the numbers


def test_report_without_trained_lenses_says_so(tiny, tmp_path):
    res = li.report(tiny, "The sky is blue.", path=tmp_path / "r.html", lenses=[], inversion_layers=[0],
                    gradient_steps=2, progress=False)
    assert res.lens_comparison is None
    assert "Not shown: no trained lens was given for this model" in res.path.read_text(encoding="utf-8")
    with pytest.raises(li.OptionError, match="lenses must be a list"):
        li.report(tiny, "The sky is blue.", path=tmp_path / "r.html", lenses="tuned", progress=False)


@pytest.mark.parametrize("prompt", ["", ["a", "b"], "\ud800 lone surrogate"])
def test_report_prompt_problems_are_prompt_errors(tiny, tmp_path, prompt):
    with pytest.raises(li.PromptError):
        li.report(tiny, prompt, path=tmp_path / "r.html", progress=False)


def test_report_checks_progress_before_any_work(tiny, tmp_path):
    with pytest.raises(li.OptionError, match="progress"):
        li.report(tiny, "", path=tmp_path / "r.html", progress="yes")
