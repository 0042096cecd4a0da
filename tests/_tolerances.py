"""Tolerances per dtype in one place."""

import torch

TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}


def assert_close(actual, expected, *, loose: float = 1.0, **override):
    """torch.testing.assert_close with the dtype's tolerances, optionally loosened by a factor."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    tol = dict(TOLERANCES.get(actual.dtype, TOLERANCES[torch.float32]))
    tol = {k: v * loose for k, v in tol.items()}
    tol.update(override)
    torch.testing.assert_close(actual, expected.to(actual.dtype), **tol)
