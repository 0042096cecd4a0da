"""Pure metrics against torch references; the heatmap and the offline HTML file."""

import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import torch.nn.functional as F
from _tolerances import assert_close

from lens_inversion import metrics
from lens_inversion.errors import LensInversionError
from lens_inversion.lens import logit_lens
from lens_inversion.viz.heatmap import ColorScale, layer_position_heatmap


def test_metrics_against_torch():
    g = torch.Generator().manual_seed(0)
    z = 4 * torch.randn(3, 7, 50, generator=g) - 100  # GPT-2-like offsets must not cost precision
    z_ref = 3 * torch.randn(7, 50, generator=g)
    tok = torch.randint(0, 50, (3, 7), generator=g)
    lp, lp_ref = z.double().log_softmax(-1), z_ref.double().log_softmax(-1)
    norm, ent, centred = metrics.normalize(z)
    assert_close(norm.lse, z.logsumexp(-1))
    assert_close(ent, torch.distributions.Categorical(logits=z.double()).entropy().float())
    ref_norm, _, ref_centred = metrics.normalize(z_ref)
    p_ref = metrics.softmax(z_ref, ref_norm)
    assert_close(p_ref, z_ref.softmax(-1))
    kl = metrics.kl_from_centred(p_ref, ref_centred, ref_norm, centred, norm, work=torch.empty_like(z))
    expected = F.kl_div(lp, lp_ref.expand_as(lp), reduction="none", log_target=True).sum(-1)
    assert_close(kl, expected.float())
    order = lp.argsort(-1, descending=True)
    assert torch.equal(metrics.cell_rank(z, tok), ((order == tok[..., None]).float().argmax(-1) + 1).float())
    ids, probs = metrics.top_k(z, norm, 3)
    assert torch.equal(ids, order[..., :3])
    assert_close(probs, lp.exp().sort(-1, descending=True).values[..., :3].float())
    assert_close(norm.log_prob(metrics.token_logit(z, tok)), lp.gather(-1, tok[..., None])[..., 0].float())
    # Zero-probability reference tokens count 0 · log 0 = 0 (torch.special.xlogy's convention).
    z_ref[0, :10] = float("-inf")
    ref_norm, _, ref_centred = metrics.normalize(z_ref)
    p_ref = metrics.softmax(z_ref, ref_norm)
    kl = metrics.kl_from_centred(p_ref, ref_centred.clamp(min=torch.finfo(z.dtype).min), ref_norm, centred, norm)
    p64 = p_ref.double()
    expected_kl = (torch.special.xlogy(p64, p64) - p64 * lp).sum(-1)
    assert torch.isfinite(kl).all()
    assert_close(kl, expected_kl.float())


def test_heatmap_keeps_repeated_labels_and_maps_log_scale():
    values = np.array([[1.0, 10.0, 5000.0], [np.nan, 100.0, 2.0]])
    fig = layer_position_heatmap(
        values,
        x_labels=["a", "a", "b"],
        y_labels=["r0", "r1"],
        top_labels=["x*", "y", "z"],
        text=np.array([["t", "u", "v"], ["", "w", "x"]], dtype=object),
        outline=np.array([[True, False, False], [False, False, True]]),
        scale=ColorScale(zmin=1, zmax=1000, log=True),
        top_down=True,
    )
    heat = fig.data[0]
    assert list(fig.layout.xaxis.ticktext) == ["a", "a", "b"] and list(heat.x) == [0, 1, 2]
    z = np.asarray(heat.z, dtype=float)
    assert z[0, 0] == 0 and z[0, 1] == 1 and z[0, 2] == 3  # log10, clipped at 1000
    assert np.isnan(z[1, 0])
    assert fig.layout.yaxis.autorange == "reversed"
    assert list(fig.layout.xaxis2.ticktext) == ["x*", "y", "z"]
    outline = [t for t in fig.data if t.name == "outline"][0]
    assert sum(x is None for x in outline.x) == 2  # two boxes
    with pytest.raises(ValueError, match="row labels"):
        layer_position_heatmap(values, x_labels=["a"], y_labels=["r"])


def test_plot_and_html(gpt2, tmp_path):
    lens = logit_lens(gpt2, "The sky is blue. The sky is", progress=False)
    fig = lens.plot(metric="rank")
    assert isinstance(fig, go.Figure)
    heat = fig.data[0]
    n = len(lens.str_tokens)
    assert list(heat.x) == list(range(n))  # repeated tokens ("The", " sky") stay separate columns
    assert len(fig.layout.xaxis.ticktext) == n
    top = list(fig.layout.xaxis2.ticktext)
    assert [t.endswith("*") for t in top] == lens.correct.tolist()
    assert heat.text[0][0] == lens.token_str(int(lens.top_tokens[0, 0, 0])).replace(" ", "␣")
    assert "rank" in heat.hovertext[1][2]
    boxes = [t for t in fig.data if t.name == "outline"]
    n_boxes = int(lens.matches_final.sum())
    assert n_boxes > 0 and sum(x is None for x in boxes[0].x) == n_boxes
    z = np.asarray(heat.z, dtype=float)
    assert np.nanmax(z) <= 3.0 and np.nanmin(z) >= 0.0  # log10 of ranks clipped to 1..1000
    kl = lens.plot(metric="kl", clip=(0, 0.1), top_down=True)
    assert np.nanmax(np.asarray(kl.data[0].z, dtype=float)) <= 0.1
    path = lens.to_html(tmp_path / "lens.html")
    page = path.read_text()
    assert len(page) > 1_000_000 and "Plotly.newPlot" in page  # plotly.js itself is inside
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing loaded from the network
    with pytest.raises(LensInversionError, match="metric"):
        lens.plot(metric="loss")
    with pytest.raises(LensInversionError, match="colorscale"):
        lens.plot(colorscale="Jet")


def test_batch_plot_picks_a_prompt(llama):
    lens = logit_lens(llama, ["The sky", "A cat sat on the mat"], progress=False)
    fig = lens.plot(metric="prob", index=0)
    assert len(fig.layout.xaxis.ticktext) == len(lens.str_tokens[0]) - lens.str_tokens[0].count("")
    with pytest.raises(LensInversionError, match="index"):
        lens.plot(index=5)
