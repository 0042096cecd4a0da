"""Shared fixtures: tiny offline models of both architectures and both backends."""

import os

import pytest
import torch
from fixture_models import available_models, build

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # pytest -n 2 runs two workers on two cores

MODELS = available_models()
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
