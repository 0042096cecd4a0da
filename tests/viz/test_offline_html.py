"""Every `to_html` goes through one writer (viz/html.py) and writes a page that works offline."""

import inspect
import re

import pytest

import lens_inversion as li
from lens_inversion.viz import html as page_writer

PROMPT = "The sky is blue. The grass is"
QUIET = {"progress": False}
# A `<script src=...>` or `<link href=...>` that points at the network would break the offline promise.
REMOTE = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)
# plotly.js, inlined: its bundle starts with this licence banner, once per embedded copy.
PLOTLY_BANNER = "plotly.js v"


def _results(model):
    attribution = li.attribute(model, PROMPT, method="grad_x_input", **QUIET)
    return {
        "LogitLensResult": li.logit_lens(model, PROMPT, **QUIET),
        "AttributionResult": attribution,
        "FaithfulnessResult": li.faithfulness(model, PROMPT, attribution, steps=2, **QUIET),
        "AblationResult": li.ablation_sweep(model, PROMPT, **QUIET),
        "BandwidthResult": li.bandwidth(model, PROMPT, target="resid_post.0", widths=[8], invert="no", **QUIET),
    }


def _public_classes_with_to_html() -> set[str]:
    return {name for name in dir(li) if inspect.isclass(getattr(li, name, None))
            and callable(getattr(getattr(li, name), "to_html", None))}


def _assert_offline(text: str, *, figures: bool) -> None:
    assert text.startswith("<!DOCTYPE html>")
    assert not REMOTE.search(text), REMOTE.search(text)
    assert text.count(PLOTLY_BANNER) == (1 if figures else 0)


@pytest.fixture(scope="module")
def results(tiny):
    return _results(tiny)


def test_every_public_to_html_is_covered(results):
    assert _public_classes_with_to_html() <= set(results), "add the new result class to _results"


@pytest.mark.parametrize("name", ["LogitLensResult", "AttributionResult", "FaithfulnessResult", "AblationResult",
                                  "BandwidthResult"])
def test_to_html_writes_one_offline_page(results, tmp_path, name):
    path = results[name].to_html(tmp_path / f"{name}.html")
    text = path.read_text(encoding="utf-8")
    assert f"<meta name='generator' content='{page_writer.GENERATOR}'>" in text, "write through viz.html.write_page"
    _assert_offline(text, figures=name != "AttributionResult")


def test_report_page_is_offline_with_plotly_once(tiny, tmp_path):
    res = li.report(tiny, PROMPT, path=tmp_path / "r.html", inversion_layers=[0], gradient_steps=2, lenses=[],
                    **QUIET)
    text = res.path.read_text(encoding="utf-8")
    assert page_writer.GENERATOR in text
    _assert_offline(text, figures=True)


def test_the_offline_check_catches_a_cdn_page():
    import plotly.graph_objects as go
    import plotly.io as pio

    cdn = pio.to_html(go.Figure(), include_plotlyjs="cdn")
    assert REMOTE.search(cdn) and PLOTLY_BANNER not in cdn
