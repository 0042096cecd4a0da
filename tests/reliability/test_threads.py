"""Several threads calling public functions on one model get the numbers of sequential calls.

The reference for every thread's result is the same call made alone, before the threads
start; afterwards the model must be exactly as before (Snapshot), the user's own hook
still attached and firing, and no thread may have raised.
"""

import threading

import pytest
import torch
from fixture_models import build
from untouched import Snapshot, assert_user_hook_fires, restore_defaults, user_state

import lens_inversion as li

pytestmark = pytest.mark.backend_generic

PROMPT = "The sky is blue. The grass is green."
T = "blocks.0.hook_resid_post"
Q = dict(progress=False)

CALLS = {
    "lens": (lambda m: li.logit_lens(m, PROMPT, **Q), lambda r: r.kl),
    "attribute": (lambda m: li.attribute(m, PROMPT, method="grad_x_input", **Q), lambda r: r.scores),
    "ablated-lens": (lambda m: _ablated_lens(m), lambda r: r.kl),
    "gradient": (lambda m: li.invert(m, PROMPT, target=T, steps=3, seed=0, **Q), lambda r: r.trace.embeddings),
}


def _ablated_lens(model):
    with li.ablated(model, li.ZeroComponent(0, "attn")):
        return li.logit_lens(model, PROMPT, **Q)


def _race(model, names, rounds):
    results, errors = {n: [] for n in names}, []
    start = threading.Barrier(len(names))

    def work(name):
        try:
            start.wait()
            for _ in range(rounds):
                results[name].append(CALLS[name][1](CALLS[name][0](model)))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append((name, error))

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results, errors


@pytest.mark.parametrize("name", ["gpt2-native", "llama-native"])
def test_concurrent_calls_equal_sequential_ones_and_leave_the_model_untouched(name):
    model = build(name)
    seen = user_state(model)
    try:
        alone = {n: fn(model) for n, (fn, _) in CALLS.items()}
        expected = {n: CALLS[n][1](r) for n, r in alone.items()}
        snapshot = Snapshot(model)
        results, errors = _race(model, list(CALLS), rounds=4)
        assert errors == []
        for n, values in results.items():
            assert len(values) == 4
            for value in values:
                torch.testing.assert_close(value, expected[n], rtol=1e-5, atol=1e-6, msg=f"{n} differs from a sequential call")
        snapshot.assert_unchanged()
        assert_user_hook_fires(model, seen)
    finally:
        restore_defaults(model)
