import lens_inversion as li

CASES = [
    ("target-extract", lambda m: li.Target.parse("blocks.1.hook_resid_post[:, 1:, :20]").extract(m, "The sky is blue.")),
]
ERROR_CASES = [
    ("target-bad-layer", lambda m: li.Target.parse("blocks.9.hook_resid_post").extract(m, "The sky")),
    ("target-bad-features", lambda m: li.Target.parse("blocks.0.hook_resid_post[:, :, 999:]").extract(m, "The sky")),
    ("empty-prompt", lambda m: li.Target.parse("blocks.0.hook_resid_post").extract(m, "")),
]
