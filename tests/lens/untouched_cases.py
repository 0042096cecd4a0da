from lens_inversion.lens import logit_lens

CASES = [
    ("logit-lens-final", lambda m: logit_lens(m, "The sky is blue.", progress=False)),
    (
        "logit-lens-input-batch",
        lambda m: logit_lens(
            m, ["The sky", "A cat sat"], compare="input", rows="sublayers", chunk_size=3, progress=False
        ),
    ),
]
ERROR_CASES = [
    ("logit-lens-bad-compare", lambda m: logit_lens(m, "The sky", compare="middle")),
    ("logit-lens-bad-positions", lambda m: logit_lens(m, "The sky", positions=[40])),
    ("logit-lens-empty", lambda m: logit_lens(m, "")),
]
