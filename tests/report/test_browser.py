"""A real browser (headless Chromium) loads the report: every plot renders, no JavaScript error,
and the layout rules hold: each plot takes the page's width, no text leaves its plot's SVG box,
no two x tick labels touch, heatmap cell text is at least 11 px.

CI installs Debian's `chromium` and sets LI_REQUIRE_BROWSER=1, so a missing browser fails
there; elsewhere the test is skipped when no Chromium is installed.
"""

import html
import json
import os
import re
import shutil
import subprocess

import plotly.graph_objects as go
import plotly.io as pio
import pytest

import lens_inversion as li
from lens_inversion.viz.report import ReportBuilder

LONG_PROMPT = "The sky is blue. The grass is green.<|endoftext|>The sun is bright and the sea is"

ERROR_PROBE = (
    "<script>window.addEventListener('error', function (e) {"
    " var root = document.documentElement;"
    " root.setAttribute('data-js-errors', (root.getAttribute('data-js-errors') || '') + '|' + e.message); });"
    "</script>"
)

# After load, measure every plot and record the result as JSON on <html data-layout>:
# drew (each heatmap/bar trace drew), width (the main SVG's) and page (the body's),
# overflow (texts outside the main SVG box), overlaps (pairs of x or top tick labels
# closer than 2 px, tested on their rotated boxes) and cellFont (smallest cell text, px).
LAYOUT_PROBE = """<script>
(function () {
  function corners(el) {
    var b = el.getBBox(), m = el.getScreenCTM();
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]].map(
      function (p) { var q = new DOMPoint(p[0], p[1]).matrixTransform(m); return [q.x, q.y]; });
  }
  function separated(a, b) {  // separating-axis test for two convex quads, 1 px tolerance
    var quads = [a, b];
    for (var k = 0; k < 2; k++) {
      for (var i = 0; i < 4; i++) {
        var p = quads[k][i], q = quads[k][(i + 1) % 4], nx = q[1] - p[1], ny = p[0] - q[0];
        var len = Math.hypot(nx, ny); if (!len) continue; nx /= len; ny /= len;
        var pa = a.map(function (c) { return c[0] * nx + c[1] * ny; });
        var pb = b.map(function (c) { return c[0] * nx + c[1] * ny; });
        if (Math.min.apply(null, pa) >= Math.max.apply(null, pb) + 2 ||
            Math.min.apply(null, pb) >= Math.max.apply(null, pa) + 2) return true;
      }
    }
    return false;
  }
  function visible(t) { return t.textContent.trim() && t.getClientRects().length && t.getBBox().width > 0; }
  function check(div) {
    var svg = div.querySelector('svg.main-svg'), r = {drew: false, width: 0, overflow: [], overlaps: [], cellFont: null};
    if (!svg) return r;
    var box = svg.getBoundingClientRect();
    r.width = Math.round(box.width);
    r.page = Math.round(document.body.getBoundingClientRect().width);
    var want = (div.data || []).filter(function (t) { return t.type === 'heatmap' || t.type === 'bar'; }).length;
    // A heatmap drew when its image has a box; a bar trace when plotly made its group (a bar of
    // height 0, e.g. a token accuracy of 0, has no box but did draw).
    var drawn = Array.prototype.filter.call(div.querySelectorAll('.cartesianlayer .hm image'),
      function (e) { var b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length +
      div.querySelectorAll('.cartesianlayer .trace.bars').length;
    // A line chart (no heatmap or bar) drew when each of its scatter traces has a visible box.
    var lines = (div.data || []).filter(function (t) { return t.type === 'scatter'; }).length;
    var drawnLines = Array.prototype.filter.call(div.querySelectorAll('.scatterlayer .trace.scatter'),
      function (e) { var b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length;
    r.drew = want > 0 ? drawn === want : lines > 0 && drawnLines === lines;
    div.querySelectorAll('svg.main-svg text').forEach(function (t) {
      if (!visible(t)) return;
      var c = corners(t), xs = c.map(function (p) { return p[0]; }), ys = c.map(function (p) { return p[1]; });
      if (Math.min.apply(null, xs) < box.left - 1 || Math.max.apply(null, xs) > box.right + 1 ||
          Math.min.apply(null, ys) < box.top - 1 || Math.max.apply(null, ys) > box.bottom + 1)
        r.overflow.push(t.textContent.slice(0, 80));
    });
    ['xtick', 'x2tick'].forEach(function (cls) {
      var ticks = Array.prototype.filter.call(div.querySelectorAll('g.' + cls + ' text'), visible)
        .map(function (t) { return [t.textContent, corners(t)]; });
      for (var i = 0; i < ticks.length; i++)
        for (var j = i + 1; j < ticks.length; j++)
          if (!separated(ticks[i][1], ticks[j][1])) r.overlaps.push(ticks[i][0] + ' / ' + ticks[j][0]);
    });
    var fonts = Array.prototype.filter.call(div.querySelectorAll('.heatmaplayer text'), visible)
      .map(function (t) { return parseFloat(getComputedStyle(t).fontSize); });
    r.cellFont = fonts.length ? Math.min.apply(null, fonts) : null;
    return r;
  }
  window.addEventListener('load', function () {
    setTimeout(function () {
      var out = Array.prototype.map.call(document.querySelectorAll('.plotly-graph-div'), check);
      document.documentElement.setAttribute('data-layout', JSON.stringify(out));
    }, 500);
  });
})();
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("LI_REQUIRE_BROWSER") == "1":
        pytest.fail("LI_REQUIRE_BROWSER=1 but no Chromium is installed (Debian package `chromium`).")
    pytest.skip("no Chromium installed (Debian package `chromium`)")


def _rendered_dom(html_path, tmp_path) -> str:
    """The DOM after the page's scripts ran in a 1,400 px window, with errors and layout recorded on <html>."""
    probe = tmp_path / "probe.html"
    page = html_path.read_text(encoding="utf-8")
    probe.write_text(page.replace("<head>", "<head>" + ERROR_PROBE + LAYOUT_PROBE, 1), "utf-8")
    # A private profile per call: two test workers sharing Chromium's default profile can hang on its lock.
    command = [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000",
               "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()]
    for attempt in range(2):  # one retry: a loaded CI machine has stalled a headless start before
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            break
        except subprocess.TimeoutExpired:
            if attempt:
                raise
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _js_errors(dom: str) -> list[str]:
    match = re.search(r'data-js-errors="([^"]*)"', dom)
    return [e for e in match.group(1).split("|") if e] if match else []


def _layout(dom: str) -> list[dict]:
    match = re.search(r'data-layout="([^"]*)"', dom)
    assert match, "the layout probe did not run"
    return json.loads(html.unescape(match.group(1)))


def _layout_faults(plots: list[dict]) -> list[str]:
    """Every broken layout rule, one line per plot and rule (empty when the layout is right)."""
    faults = []
    for i, plot in enumerate(plots):
        if not plot["drew"]:
            faults.append(f"plot {i} did not draw")
        if not 0.9 * plot.get("page", 0) <= plot["width"] <= plot.get("page", 0) + 1:
            faults.append(f"plot {i} is {plot['width']} px wide on a {plot.get('page')} px page")
        faults += [f"plot {i}: text leaves the plot: {text!r}" for text in plot["overflow"]]
        faults += [f"plot {i}: tick labels collide: {pair!r}" for pair in plot["overlaps"]]
        if plot["cellFont"] is not None and plot["cellFont"] < 11:
            faults.append(f"plot {i}: cell text is {plot['cellFont']} px")
    return faults


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
    assert len(plots) == 7  # six sections + the trained-lens comparison
    for plot in plots:  # plotly draws into <svg class="main-svg"> only when the script ran
        assert 'class="main-svg"' in plot[:200_000]
    # Four logit-lens heatmaps and the ablation heatmap drew their heatmap layers.
    assert len(re.findall(r'class="hm"', dom)) == 5
    # The attribution sections are highlighted text (three methods).
    assert dom.count("predicted next token") >= 3
    assert _layout_faults(_layout(dom)) == []


def test_long_prompt_with_a_special_token_keeps_the_layout_rules(tmp_path):
    path = tmp_path / "long.html"
    result = li.report(li.load_model("tiny"), LONG_PROMPT, path=path, gradient_steps=5, inversion_layers=[0, 3],
                       progress=False)
    tokens = result.lens_final.str_tokens
    assert len(tokens) >= 15 and tokens[1:].count("<|endoftext|>") == 1
    dom = _rendered_dom(path, tmp_path)
    assert _js_errors(dom) == []
    plots = _layout(dom)
    assert len(plots) == 7  # six sections + the trained-lens comparison
    assert _layout_faults(plots) == []
    assert "&lt;|eot|&gt;" in dom  # the special token is elided on the axes


def test_the_layout_probe_catches_the_old_layout(tmp_path):
    """Control: a heatmap laid out the old way (fixed 450 px, one-line title, upright `<|endoftext|>`
    next to a short label, 10 px cell text) and a plot whose script never ran break every rule."""
    labels = ["&lt;|endoftext|&gt;", "The", " sky", " is", " blue", "."]
    old = go.Figure(go.Heatmap(z=[list(range(6))], x=list(range(6)), y=[0], text=[list("abcdef")],
                               texttemplate="%{text}", textfont=dict(size=10)))
    # One font, 14 px ticks: the labels collide whatever fonts the machine has (plotly's "arial"
    # is Liberation Sans where fonts-liberation is installed, narrower than the DejaVu fallback).
    old.update_layout(width=450, height=320, font=dict(family="DejaVu Sans"),
                      xaxis=dict(tickvals=list(range(6)), ticktext=labels, tickangle=0, tickfont=dict(size=14)),
                      title="Logit lens: KL(final ‖ row) (outlined: row's top-1 = final top-1; * = final top-1 correct)")
    page = ReportBuilder(title="old layout")
    page.fragment(pio.to_html(old, full_html=False, include_plotlyjs=True))
    page.fragment('<div class="plotly-graph-div" style="height:300px"></div>')  # never drawn
    path = tmp_path / "old.html"
    page.write(path)
    faults = "\n".join(_layout_faults(_layout(_rendered_dom(path, tmp_path))))
    for says in ("plot 0 is 450 px wide", "text leaves the plot: \"Logit lens", "collide: '<|endoftext|> / The'",
                 "cell text is 10 px", "plot 1 did not draw"):
        assert says in faults


def test_the_error_probe_catches_a_broken_script(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><head></head><body><script>undefinedFunction();</script></body></html>")
    dom = _rendered_dom(broken, tmp_path)
    assert any("undefinedFunction" in e for e in _js_errors(dom))
