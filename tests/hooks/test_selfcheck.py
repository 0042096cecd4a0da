"""Fault injection: a broken fast path is caught on first use, the call falls back, the answer stays exact.

The reference for every answer is an independent full run (`adapter.run` on the whole
sequence) or the prompt's own tokens; the broken backends below are what a dependency
release could do to us (an empty cache, a cache that forgets its cut, a wrong readout).
"""

import pytest
import torch
from _tolerances import assert_close
from fixture_models import build_fresh

from lens_inversion.hooks import Site, adapter_for, selfcheck
from lens_inversion.hooks.execution import PrefixState, readout_only, run_after
from lens_inversion.hooks.fast_paths import run_all
from lens_inversion.hooks.kv_cache import HFCache
from lens_inversion.hooks.selfcheck import SelfCheckError, SelfCheckWarning, strict_checks
from lens_inversion.inversion.exact import invert_exact

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # not SelfCheckWarning: pytest.warns records it

TEXT = "The sky is blue. A cat sat."


@pytest.fixture
def hf_model():
    return build_fresh("gpt2-hf")


def _drop_cache(monkeypatch):
    """A backend whose prefix run leaves the cache empty (what transformers 5.24 did to us)."""

    def build(self, model, tokens):
        return self._cache_class()

    monkeypatch.setattr(HFCache, "build", build)


def _tokens(model, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, model.cfg.d_vocab, (1, width), generator=g)


def test_healthy_model_passes_every_check(hf_model):
    verdicts = run_all(adapter_for(hf_model))
    names = {v.name for v in verdicts}
    assert {"kv_prefix[hf]", "cut_prefix[hf]", "layered_run[hf]", "readout_only", "batched_rows", "lens_row"} <= names
    assert all(v.passed and v.max_error <= v.tolerance for v in verdicts), [str(v) for v in verdicts]


def test_dropped_cache_is_caught_and_the_call_falls_back(hf_model, monkeypatch):
    _drop_cache(monkeypatch)
    adapter = adapter_for(hf_model)
    tokens = _tokens(hf_model, 9)
    with pytest.warns(SelfCheckWarning, match=r"kv_prefix\[hf\].*holds 0 positions.*transformers"):
        prefix = PrefixState.build(hf_model, tokens[:, :5])
    assert not prefix.cached
    key = (Site.RESID_POST, adapter.n_layers - 1)
    with torch.no_grad():
        got = run_after(prefix, tokens[:, 5:], capture=[key])[key]
        full = adapter.run(tokens, capture=[key])[key][:, 5:]
    assert_close(got, full)
    verdict = next(v for v in selfcheck.cached_verdicts(hf_model) if v.name == "kv_prefix[hf]")
    assert verdict.status == "fell back"


def test_exact_inversion_stays_exact_with_a_broken_cache(hf_model, monkeypatch):
    _drop_cache(monkeypatch)
    target = f"blocks.{hf_model.cfg.n_layers - 1}.hook_resid_post"
    with pytest.warns(SelfCheckWarning):
        res = invert_exact(hf_model, TEXT, target=target, progress=False, seed=0)
    assert res.token_accuracy == 1.0
    assert torch.equal(res.tokens, adapter_for(hf_model).prompt(TEXT).tokens)
    assert any(c.name == "kv_prefix[hf]" and c.status == "fell back" for c in res.checks)


def test_strict_mode_raises_naming_the_check_and_versions(hf_model, monkeypatch):
    _drop_cache(monkeypatch)
    with strict_checks(), pytest.raises(SelfCheckError, match=r"kv_prefix\[hf\].*torch .*transformers .*transformer-lens"):
        PrefixState.build(hf_model, _tokens(hf_model, 5))
    # A cached failure still raises under strict mode, through the environment variable too.
    monkeypatch.setenv(selfcheck.STRICT_ENV, "1")
    with pytest.raises(SelfCheckError):
        PrefixState.build(hf_model, _tokens(hf_model, 5))


def test_strict_keyword_on_a_public_function_raises(hf_model, monkeypatch):
    import inspect

    import lens_inversion as li
    from lens_inversion.errors import OptionError

    assert inspect.signature(li.invert).parameters["strict"].default is False
    assert inspect.signature(li.attribute).parameters["strict"].kind is inspect.Parameter.KEYWORD_ONLY
    _drop_cache(monkeypatch)
    target = f"blocks.{hf_model.cfg.n_layers - 1}.hook_resid_post"
    with pytest.raises(SelfCheckError, match=r"kv_prefix\[hf\]"):
        li.invert(hf_model, TEXT, target=target, method="exact", progress=False, seed=0, strict=True)
    with pytest.raises(OptionError, match="strict='yes'"):
        li.invert(hf_model, TEXT, target=target, method="exact", strict="yes")


def test_broken_cut_falls_back_to_recompute(hf_model, monkeypatch):
    monkeypatch.setattr(HFCache, "cut", lambda self, cache, length: cache)  # forgets to cut
    adapter = adapter_for(hf_model)
    tokens = _tokens(hf_model, 9, seed=1)
    longest = PrefixState.build(hf_model, tokens[:, :6])
    with pytest.warns(SelfCheckWarning, match=r"cut_prefix\[hf\]"):
        short = longest.truncated(3)
    assert not short.cached
    with torch.no_grad():
        got = run_after(short, tokens[:, 3:], need_logits=True).logits
    assert_close(got, adapter.run(tokens, need_logits=True).logits[:, 3:])


def test_broken_readout_is_not_used(hf_model, monkeypatch):
    from lens_inversion.hooks import execution

    wrong = lambda adapter, positions: [("unembed.hook_in", lambda x, hook: x[:, :len(positions)] * 0)]  # noqa: E731
    monkeypatch.setattr(execution, "readout_unchecked", wrong)
    from lens_inversion.hooks import fast_paths

    monkeypatch.setattr(fast_paths, "readout_unchecked", wrong)
    with pytest.warns(SelfCheckWarning, match="readout_only"):
        assert readout_only(adapter_for(hf_model), [0, 2]) == []


def test_a_verdict_is_computed_once_per_model(hf_model, monkeypatch):
    calls = []
    original = HFCache.build

    def counting(self, model, tokens):
        calls.append(tokens.shape[1])
        return original(self, model, tokens)

    monkeypatch.setattr(HFCache, "build", counting)
    for _ in range(3):
        PrefixState.build(hf_model, _tokens(hf_model, 5))
    # One probe prefix, then one real prefix per call.
    assert len(calls) == 1 + 3


def test_doctor_reports_versions_and_exits_nonzero_on_a_failure(monkeypatch, capsys):
    from lens_inversion.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "transformers" in out and "kv_prefix[hf]" in out and "all self-checks passed" in out
    _drop_cache(monkeypatch)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL kv_prefix[hf]" in out and "holds 0 positions" in out


def test_writing_the_weights_invalidates_every_verdict(hf_model, monkeypatch):
    """A cached verdict is about the weights it was measured on; new weights are checked again."""
    adapter = adapter_for(hf_model)
    run_all(adapter, force=False)
    decided = []
    real = selfcheck._decide
    monkeypatch.setattr(selfcheck, "_decide", lambda *a, **k: decided.append(a[1]) or real(*a, **k))
    PrefixState.build(hf_model, _tokens(hf_model, 5))
    assert decided == []  # cached: nothing re-run
    with torch.no_grad():
        next(hf_model.parameters()).mul_(1.5)  # an in-place write, as fine-tuning or a weight edit does
    PrefixState.build(hf_model, _tokens(hf_model, 5))
    assert decided == ["kv_prefix[hf]"]


def test_a_fast_path_the_architecture_cannot_run_is_unsupported_quietly(hf_model, monkeypatch):
    """Widening the batch mid-forward raises on some architectures (ALiBi, fixed reshapes):
    that shortcut is 'unsupported', the reference path runs, nothing warns, and the sweep
    still equals a naive loop of single forwards."""
    import warnings

    import lens_inversion as li

    def expanded(self, cache, batch, *, from_layer=0):
        if from_layer:
            raise RuntimeError("The expanded size of the tensor (8) must match the existing size (4)")
        return original(self, cache, batch, from_layer=from_layer)

    original = HFCache.expanded
    monkeypatch.setattr(HFCache, "expanded", expanded)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfCheckWarning)
        sweep = li.ablation_sweep(hf_model, TEXT, layers=[1], target="resid_post[:, 2:5:2]", progress=False)
    verdict = next(v for v in sweep.checks if v.name == "layered_run[hf]")
    assert verdict.status == "unsupported" and verdict.healthy and "expanded size" in verdict.detail
    adapter = adapter_for(hf_model)
    tokens = adapter.prompt(TEXT).tokens
    with torch.no_grad():
        clean = torch.log_softmax(hf_model(tokens)[0, -1], -1)
        for column, position in enumerate([2, 4]):
            def zero(x, hook, position=position):
                x = x.clone()
                x[:, position] = 0
                return x

            with hf_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", zero)]):
                ablated = torch.log_softmax(hf_model(tokens)[0, -1], -1)
            kl = torch.sum(clean.exp() * (clean - ablated))
            assert_close(sweep.values[0, column], kl, atol=1e-5)
    assert run_all(adapter) and all(v.healthy for v in run_all(adapter))
