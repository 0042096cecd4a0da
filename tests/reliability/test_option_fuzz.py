"""Every keyword option of every public function, given generic wrong values (a string, a
bool, a negative number, NaN, inf, an empty list, an arbitrary object, an integer too large
for 64 bits, a tuple): each call either runs or raises one of our typed errors. A raw
exception (TypeError, OverflowError, a torch RuntimeError...) fails the test.

The hand-written cases in test_bad_inputs.py check the messages; this sweep checks that no
combination slips past validation into torch."""

import inspect
import warnings

import pytest
import torch
from fixture_models import build

import lens_inversion as li
from lens_inversion.inversion.exact import invert_exact
from lens_inversion.inversion.gradient import invert_gradient

pytestmark = pytest.mark.backend_generic

P = "The sky is blue."
T = "blocks.0.hook_resid_post"
GENERIC_WRONG = ["x", True, -1, float("nan"), float("inf"), [], object(), 10**30, (1,)]


def _calls(model, tmp_path):
    attribution = li.attribute(model, P, progress=False)
    return {
        "logit_lens": (li.logit_lens, lambda **k: li.logit_lens(model, P, **k)),
        "attribute": (li.attribute, lambda **k: li.attribute(model, P, **k)),
        "faithfulness": (li.faithfulness, lambda **k: li.faithfulness(model, P, attribution, **{"steps": 2, **k})),
        "invert-gradient": (invert_gradient, lambda **k: li.invert(model, P, **{"target": T, "steps": 2, **k})),
        "invert-exact": (invert_exact, lambda **k: li.invert(model, P, **{"target": T, "method": "exact", **k})),
        "decode_embeddings": (li.decode_embeddings, lambda **k: li.decode_embeddings(model, torch.randn(1, 3, 64), **k)),
        "visualize_feature": (
            li.visualize_feature,
            lambda **k: li.visualize_feature(model, **{"target": f"{T}[:, -1, 3]", "steps": 2, "n_tokens": 3, **k}),
        ),
        "orthogonal_walk": (li.orthogonal_walk, lambda **k: li.orthogonal_walk(model, P, **{"target": T, "steps": 2, **k})),
        "clamped_walk": (
            li.clamped_walk,
            lambda **k: li.clamped_walk(model, P, **{"target": T, "steps": 2, "inner_steps": 2, **k}),
        ),
        "ablation_sweep": (li.ablation_sweep, lambda **k: li.ablation_sweep(model, P, **k)),
        "bandwidth": (li.bandwidth, lambda **k: li.bandwidth(model, P, **{"target": T, "widths": [8], **k})),
        "report": (
            li.report,
            lambda **k: li.report(model, P, **{"path": tmp_path / "r.html", "gradient_steps": 2, **k}),
        ),
    }


FUNCTIONS = [
    "logit_lens", "attribute", "faithfulness", "invert-gradient", "invert-exact", "decode_embeddings",
    "visualize_feature", "orthogonal_walk", "clamped_walk", "ablation_sweep", "bandwidth", "report",
]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_generic_wrong_values_end_in_a_result_or_our_error(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # path="x" is a valid destination: keep it out of the checkout
    model = build("gpt2-hf")
    signature_of, call = _calls(model, tmp_path)[name]
    options = [n for n, p in inspect.signature(signature_of).parameters.items() if p.kind is p.KEYWORD_ONLY]
    raw = []
    for option in options:
        for value in GENERIC_WRONG:
            kwargs = {"progress": False} if "progress" in options and option != "progress" else {}
            kwargs[option] = value
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    call(**kwargs)
            except li.LensInversionError:
                pass
            except Exception as error:  # noqa: BLE001 - the point of the test
                raw.append(f"{option}={value!r}: {type(error).__name__}: {str(error)[:120]}")
    assert raw == [], "raw exceptions:\n" + "\n".join(raw)
