"""Public functions of lens_inversion.models.evaluate, for the model-untouched registry."""

from lens_inversion.models import evaluate

TEXTS = ["The sky is blue.", "One, two, three."]

CASES = [
    ("heldout_loss", lambda model: evaluate.heldout_loss(model, TEXTS)),
    ("greedy", lambda model: evaluate.greedy(model, "The sky is", n_tokens=2)),
    ("lens_kl_per_layer", lambda model: evaluate.lens_kl_per_layer(model, TEXTS)),
]
ERROR_CASES = [
    ("heldout_loss-empty", lambda model: evaluate.heldout_loss(model, [""])),
    ("greedy-empty", lambda model: evaluate.greedy(model, "")),
]
