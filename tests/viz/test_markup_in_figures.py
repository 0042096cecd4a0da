"""Token text shows literally in every figure: Plotly's pseudo-HTML (`<b>`, `<br>`) is escaped.

Each figure builder that shows token text gets a result whose tokens spell markup; every
text string of the figure (ticks, trace text and labels, titles) must hold `&lt;b&gt;` and
never a raw `<b>`.
"""

import dataclasses

import pytest
from fixture_models import build

import lens_inversion as li

pytestmark = pytest.mark.backend_generic

MARKUP = "<b>B</b>"
PROMPT = "The sky is blue."
T = "blocks.0.hook_resid_post"
Q = dict(progress=False)


@pytest.fixture(scope="module")
def gpt2():
    return build("gpt2-native")


def _strings(fig) -> list[str]:
    """Every text a figure shows: trace x/y/text labels, titles, annotations."""
    out: list[str] = []
    for trace in fig.data:
        for key in ("x", "y", "text", "name"):
            value = getattr(trace, key, None)
            if isinstance(value, str):
                out.append(value)
            elif value is not None:
                out += [v for v in value if isinstance(v, str)]
    layout = fig.layout
    out += [t for t in (layout.title.text, layout.xaxis.title.text, layout.yaxis.title.text) if t]
    out += [a.text for a in layout.annotations if a.text]
    for axis in (layout.xaxis, layout.yaxis):
        out += [t for t in (axis.ticktext or ()) if isinstance(t, str)]
    return out


def _assert_literal(fig) -> None:
    shown = _strings(fig)
    assert any("&lt;b&gt;" in s for s in shown), shown
    assert not any("<b>" in s for s in shown), [s for s in shown if "<b>" in s]


def _marked(tokens: list[str]) -> list[str]:
    return [MARKUP if i == 1 else t for i, t in enumerate(tokens)]


def test_attribution_bar_and_heatmap(gpt2):
    bar = li.attribute(gpt2, PROMPT, **Q)
    _assert_literal(dataclasses.replace(bar, str_tokens=_marked(bar.str_tokens)).plot())
    matrix = li.attribute(gpt2, PROMPT, per_output=True, **Q)
    _assert_literal(dataclasses.replace(matrix, str_tokens=_marked(matrix.str_tokens)).plot(kind="heatmap"))


def test_ablation_sweep_chart(gpt2):
    sweep = li.ablation_sweep(gpt2, PROMPT, layers=[0], **Q)
    _assert_literal(dataclasses.replace(sweep, str_tokens=_marked(sweep.str_tokens)).plot())


def test_walk_chart(gpt2):
    walk = li.orthogonal_walk(gpt2, PROMPT, target=T, steps=2, **Q)
    _assert_literal(dataclasses.replace(walk, texts=[MARKUP] * len(walk.texts)).plot())


def test_feature_viz_chart(gpt2):
    res = li.visualize_feature(gpt2, target=f"{T}[:, -1, 0]", n_tokens=1, steps=2, **Q)
    texts = [MARKUP] + list(res.scan_texts[1:])
    _assert_literal(dataclasses.replace(res, scan_texts=texts).plot())


def test_logit_lens_heatmap(gpt2):
    lens = li.logit_lens(gpt2, PROMPT, **Q)
    tokens = [_marked(row) for row in lens.str_tokens] if lens.batched else _marked(lens.str_tokens)
    _assert_literal(dataclasses.replace(lens, str_tokens=tokens).plot(metric="kl"))
