from lens_inversion.attribution import attribute, faithfulness

PROMPT = "The sky is blue."


def _faithfulness(model):
    return faithfulness(model, PROMPT, attribute(model, PROMPT, method="occlusion", progress=False), progress=False)


CASES = [
    ("attribute-grad", lambda m: attribute(m, PROMPT, progress=False)),
    (
        "attribute-occlusion-target",
        lambda m: attribute(
            m, PROMPT, method="occlusion", target="blocks.0.hook_resid_post[:, 1:, :8]", progress=False
        ),
    ),
    (
        "attribute-combined-per-output",
        lambda m: attribute(m, PROMPT, method="combined", per_output=True, baseline="mean", progress=False),
    ),
    ("faithfulness", _faithfulness),
]
ERROR_CASES = [
    ("attribute-bad-method", lambda m: attribute(m, PROMPT, method="saliency", progress=False)),
    (
        "attribute-bad-target-layer",
        lambda m: attribute(m, PROMPT, method="combined", target="blocks.7.hook_resid_post", progress=False),
    ),
    ("attribute-bad-callable", lambda m: attribute(m, PROMPT, objective=lambda logits: logits.sum(), progress=False)),
    (
        "faithfulness-other-prompt",
        lambda m: faithfulness(m, "Other words.", attribute(m, PROMPT, progress=False), progress=False),
    ),
]
