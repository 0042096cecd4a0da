"""HTML is escaped and complete; plots have one bar per token."""

import html

from lens_inversion.attribution import attribute
from lens_inversion.viz.tokens_html import highlight_tokens, score_color


def test_script_prompt_is_escaped(gpt2, tmp_path):
    prompt = "<script>x</script>&<b>"
    result = attribute(gpt2, prompt, method="occlusion", progress=False)
    page = result.to_html(tmp_path / "attr.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;" in page and "&amp;" in page
    for token in result.str_tokens:
        assert html.escape(token, quote=True) in page
    assert "predicted next token" in page and html.escape(result.predicted_token, quote=True) in page
    assert "li-legend" in page


def test_highlight_tokens_escapes_and_colours():
    fragment = highlight_tokens(["<script>", "a&b", '"q"'], [0.0, 0.5, 1.0], predicted_token="<i>", title="<t>")
    assert "<script>" not in fragment and "<i>" not in fragment and "<t>" not in fragment
    assert "&lt;script&gt;" in fragment and "a&amp;b" in fragment and "&quot;q&quot;" in fragment
    assert score_color(1.0, signed=False) == "rgb(214, 39, 40)"  # red for high
    assert score_color(0.0, signed=False) == "rgb(49, 99, 206)"  # blue for low
    assert score_color(-1.0, signed=True) == "rgb(49, 99, 206)"


def test_bar_plot_has_one_bar_per_token(llama):
    result = attribute(llama, "The sky is blue.", progress=False)
    fig = result.plot()
    assert fig.data[0].type == "bar"
    assert list(fig.data[0].y) == result.scores.tolist()
    assert len(fig.data[0].x) == len(result.str_tokens)
    assert "predicted" in repr(result) and result.top(2)[0][2] == 1.0
