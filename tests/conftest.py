"""Shared fixtures: tiny offline models of both architectures and both backends."""

import os

import pytest
import torch
from fixture_models import available_models, build

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # pytest -n 2 runs two workers on two cores

MODELS = available_models()

# A fast path that fails its self-check fails the test that used it. Under LI_STRICT_TESTS=1
# (`make test-strict`, which also turns on the run-time shape checks of tests/shape_checks.py),
# our other warnings fail a test that did not expect them too. They are added here, not in
# pyproject's filterwarnings: pytest imports a category named there before jaxtyping's import
# hook is installed, and an already-imported lens_inversion cannot be shape-checked.
OUR_WARNINGS = ("lens_inversion.hooks.selfcheck.SelfCheckWarning",)
STRICT_WARNINGS = ("lens_inversion.inversion.result.InversionWarning", "lens_inversion.lens.tuned.LensMismatchWarning")


# Under LI_STRICT_TESTS=1: warnings from any of our modules are errors, except our own
# deprecations and future warnings, which are errors only when they report an old spelling.
STRICT_FILTERS = (
    r"error:::lens_inversion(\..*)?",
    r"ignore::DeprecationWarning:lens_inversion(\..*)?",
    r"ignore::FutureWarning:lens_inversion(\..*)?",
    r"error:The (option|field|metric) .* is renamed:DeprecationWarning",
)


def pytest_configure(config):
    strict = os.environ.get("LI_STRICT_TESTS") == "1"
    for category in OUR_WARNINGS + (STRICT_WARNINGS if strict else ()):
        config.addinivalue_line("filterwarnings", f"error::{category}")
    if strict:  # ini lines, not -W: pytest escapes a -W filter's message and module, so regexes never match
        for line in STRICT_FILTERS:
            config.addinivalue_line("filterwarnings", line)


GPT2_MODELS = tuple(m for m in MODELS if m.startswith("gpt2"))


@pytest.fixture(params=MODELS)
def model(request):
    """Every tiny model this install supports (bridge fixtures on 4.x, HT on 3.x)."""
    return build(request.param)


@pytest.fixture
def gpt2():
    return build(GPT2_MODELS[0])


@pytest.fixture
def llama():
    return build("llama-native")


@pytest.fixture(scope="session")
def tiny():
    """The embedded trained model, when it is shipped."""
    import lens_inversion as li

    return li.load_model("tiny", device="cpu")
