import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small models on a shared CPU: two OpenMP threads under load run up to 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def untrained():
    """The embedded untrained twin of the tiny model (4 blocks, d_model 128)."""
    import lens_inversion as li

    return li.load_model("tiny-untrained", device="cpu")
