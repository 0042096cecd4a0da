"""The heatmap's page rules, read from the figure (the browser test measures them drawn)."""

import numpy as np
import plotly.graph_objects as go

from lens_inversion.viz.heatmap import HOVER_ONLY_AFTER, layer_position_heatmap, plotly_text, short_label, wrap_title
from lens_inversion.viz.report import fit_to_page

TITLE = "Logit lens: KL(final ‖ row) (outlined: row's top-1 = final top-1; * = final top-1 correct)"


def _heatmap(n_cols: int, n_rows: int = 3, **options) -> go.Figure:
    labels = ["<|endoftext|>", "<b>"] + [f"t{i}" for i in range(n_cols - 2)]
    return layer_position_heatmap(
        np.zeros((n_rows, n_cols)), x_labels=labels, y_labels=[str(r) for r in range(n_rows)],
        top_labels=[t + "*" for t in labels], text=np.full((n_rows, n_cols), "␣opposite", dtype=object),
        title=TITLE, **options,
    )


def test_tokens_display_literally_and_special_tokens_are_elided():
    assert plotly_text("<b>") == "&lt;b&gt;" and plotly_text("&lt;b&gt;") == "&lt;b&gt;"  # raw or escaped
    assert short_label("<|endoftext|>") == short_label("&lt;|endoftext|&gt;") == "&lt;|eot|&gt;"
    assert short_label("<|endoftext|>*") == "&lt;|eot|&gt;*"
    assert short_label("<|im_start|>") == "&lt;|im_|&gt;"
    assert short_label("a_very_long_token_indeed") == "a_very_long…"
    fig = _heatmap(9)
    assert list(fig.layout.xaxis.ticktext[:2]) == ["&lt;|eot|&gt;", "&lt;b&gt;"]
    assert list(fig.layout.xaxis2.ticktext[:2]) == ["&lt;|eot|&gt;*", "&lt;b&gt;*"]
    assert "&lt;|endoftext|&gt;" in fig.data[0].hovertext[0][0]  # the full label stays in the hover


def test_the_figure_takes_the_page_width_and_grows_with_rows():
    short, tall = _heatmap(20, n_rows=3), _heatmap(20, n_rows=30)
    assert short.layout.width is None and short.layout.autosize
    assert tall.layout.height > short.layout.height
    assert short.data[0].textfont.size >= 11


def test_cell_text_moves_to_hover_past_the_threshold_and_labels_turn_when_crowded():
    few, many = _heatmap(9), _heatmap(HOVER_ONLY_AFTER + 1)
    assert few.data[0].texttemplate == "%{text}" and few.layout.xaxis.tickangle == 0
    assert many.data[0].texttemplate is None and many.layout.xaxis.tickangle == -90
    assert _heatmap(22).data[0].text[0][0].endswith("…")  # cut to what fits a column


def test_long_titles_wrap_and_their_explanation_becomes_a_legend_line():
    heading = _heatmap(9).layout.title.text
    assert heading.startswith("Logit lens: KL(final ‖ row)<br>")
    assert "outlined: row's top-1 = final top-1 · * = final top-1 correct" in heading
    assert all(len(line) <= 70 for line in wrap_title("word " * 40).split("<br>"))
    assert "font-size:12px" not in _heatmap(9, legend="").layout.title.text  # "" shows no legend line


def test_report_fits_foreign_figures_and_escapes_their_categories():
    fig = go.Figure(go.Heatmap(z=[[1, 2]], x=["0: '<b>'", "1: 'x'"], y=["layer 0"]))
    fig.update_layout(width=450, title="zero ablation " * 10)
    fitted = fit_to_page(fig)
    assert fitted.layout.width is None and "<br>" in fitted.layout.title.text
    assert list(fitted.data[0].x) == ["0: '&lt;b&gt;'", "1: 'x'"]
    assert fig.layout.width == 450  # the caller's figure is untouched
