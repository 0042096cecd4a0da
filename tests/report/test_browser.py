"""A real browser (headless Chromium) loads the report: every plot renders, no JavaScript error.

CI installs Debian's `chromium` and sets LI_REQUIRE_BROWSER=1, so a missing browser fails
there; elsewhere the test is skipped when no Chromium is installed.
"""

import os
import re
import shutil
import subprocess

import pytest

import lens_inversion as li

ERROR_PROBE = (
    "<script>window.addEventListener('error', function (e) {"
    " var root = document.documentElement;"
    " root.setAttribute('data-js-errors', (root.getAttribute('data-js-errors') || '') + '|' + e.message); });"
    "</script>"
)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("LI_REQUIRE_BROWSER") == "1":
        pytest.fail("LI_REQUIRE_BROWSER=1 but no Chromium is installed (Debian package `chromium`).")
    pytest.skip("no Chromium installed (Debian package `chromium`)")


def _rendered_dom(html_path, tmp_path) -> str:
    """The DOM after the page's scripts ran, with window errors recorded on <html>."""
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("<head>", "<head>" + ERROR_PROBE, 1), "utf-8")
    done = subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _js_errors(dom: str) -> list[str]:
    match = re.search(r'data-js-errors="([^"]*)"', dom)
    return [e for e in match.group(1).split("|") if e] if match else []


@pytest.fixture(scope="module")
def report_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("browser") / "report.html"
    li.report(li.load_model("tiny"), "The sky is blue. The grass is", path=path, gradient_steps=5,
              inversion_layers=[0, 3], progress=False)
    return path


def test_report_renders_every_plot_without_javascript_errors(report_path, tmp_path):
    dom = _rendered_dom(report_path, tmp_path)
    assert _js_errors(dom) == []
    plots = re.split(r'class="plotly-graph-div', dom)[1:]
    assert len(plots) == 6
    for plot in plots:  # plotly draws into <svg class="main-svg"> only when the script ran
        assert 'class="main-svg"' in plot[:200_000]
    # Four logit-lens heatmaps and the ablation heatmap drew their heatmap layers.
    assert len(re.findall(r'class="hm"', dom)) == 5
    # The attribution sections are highlighted text (three methods).
    assert dom.count("predicted next token") >= 3


def test_the_error_probe_catches_a_broken_script(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><head></head><body><script>undefinedFunction();</script></body></html>")
    dom = _rendered_dom(broken, tmp_path)
    assert any("undefinedFunction" in e for e in _js_errors(dom))
