"""run_after(prefix, new) equals slicing a full run, on every backend, with and without a cache."""

import pytest
import torch
from _tolerances import assert_close

from lens_inversion.errors import OptionError, PromptError
from lens_inversion.hooks import Site, adapter_for
from lens_inversion.hooks.execution import PrefixState, run_after

P, N, B = 5, 3, 4


def _tokens(model, batch, width, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, model.cfg.d_vocab, (batch, width), generator=g)


def _full(adapter, tokens, capture, **kwargs):
    with torch.no_grad():
        return adapter.run(tokens, capture=capture, **kwargs)


@pytest.mark.parametrize("reuse", ["auto", "recompute"])
def test_matches_full_run(model, reuse):
    adapter = adapter_for(model)
    last = adapter.n_layers - 1
    capture = [(Site.RESID_POST, 0), (Site.RESID_MID, last), (Site.RESID_POST, last)]
    prefix_tokens = _tokens(model, 1, P, 0)
    new = _tokens(model, B, N, 1)
    prefix = PrefixState.build(model, prefix_tokens, reuse=reuse)
    with torch.no_grad():
        got = run_after(prefix, new, capture=capture, need_logits=True)
    full = _full(adapter, torch.cat([prefix_tokens.expand(B, -1), new], 1), capture, need_logits=True)
    for key in capture:
        assert got[key].shape == (B, N, adapter.d_model)
        assert_close(got[key], full[key][:, P:], loose=10)
    assert_close(got.logits, full.logits[:, P:], loose=10)


def test_cache_used_where_available(model):
    prefix = PrefixState.build(model, _tokens(model, 1, P, 0))
    if not adapter_for(model).is_bridge:
        expected = "hooked"
    else:
        expected = "recompute" if "native" in type(model.original_model).__name__.lower() else "hf"
    assert prefix.backend.name == expected


def test_stops_early_and_cache_not_mutated(model):
    adapter = adapter_for(model)
    prefix = PrefixState.build(model, _tokens(model, 1, P, 0))
    new = _tokens(model, B, N, 2)
    fired = []
    deeper = adapter.hook_name(Site.RESID_MID, adapter.n_layers - 1)
    with torch.no_grad():
        first = run_after(prefix, new, capture=[(Site.RESID_POST, 0)])
        # A hook on a deeper block never fires: the run stopped after block 0.
        from lens_inversion.hooks import attached

        with attached(model, [(deeper, lambda x, hook: fired.append(1))], require_fire=False):
            second = run_after(prefix, new[:1], capture=[(Site.RESID_POST, 0)])
    assert not fired
    assert first.logits is None
    assert_close(second[(Site.RESID_POST, 0)], first[(Site.RESID_POST, 0)][:1])
    if prefix.backend.name == "hf":
        assert prefix.cache.get_seq_length() == P
        assert prefix.cache.layers[0].keys.shape[0] == 1


def test_embeds_and_gradients(model):
    adapter = adapter_for(model)
    prefix_tokens = _tokens(model, 1, P, 0)
    new = _tokens(model, 2, N, 3)
    prefix = PrefixState.build(model, prefix_tokens)
    for p in model.parameters():
        p.requires_grad_(False)
    embeds = adapter.embed(new).detach().clone().requires_grad_(True)
    got = run_after(prefix, embeds=embeds, capture=[(Site.RESID_POST, 0)])[(Site.RESID_POST, 0)]
    full = _full(adapter, torch.cat([prefix_tokens.expand(2, -1), new], 1), [(Site.RESID_POST, 0)])
    assert_close(got.detach(), full[(Site.RESID_POST, 0)][:, P:], loose=10)
    got.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_hooks_see_new_positions_only(model):
    """An edit through run_after's hooks equals the same edit on the new positions of a full run."""
    adapter = adapter_for(model)
    prefix_tokens = _tokens(model, 1, P, 0)
    new = _tokens(model, 2, N, 4)
    name = adapter.hook_name(Site.RESID_POST, 0)
    widths = []

    def double(x, hook):
        widths.append(x.shape[1])
        return x * 2

    def double_tail(x, hook):
        return torch.cat([x[:, :P], x[:, P:] * 2], 1)

    last = adapter.n_layers - 1
    for reuse in ("auto", "recompute"):
        prefix = PrefixState.build(model, prefix_tokens, reuse=reuse)
        with torch.no_grad():
            got = run_after(prefix, new, capture=[(Site.RESID_POST, last)], hooks=[(name, double)])
        full = _full(adapter, torch.cat([prefix_tokens.expand(2, -1), new], 1), [(Site.RESID_POST, last)],
                     hooks=[(name, double_tail)])
        assert_close(got[(Site.RESID_POST, last)], full[(Site.RESID_POST, last)][:, P:], loose=10)
    assert widths == [N, N]


def test_per_row_prefix_and_empty_prefix(model):
    adapter = adapter_for(model)
    prefix_tokens = _tokens(model, 2, P, 5)
    new = _tokens(model, 2, 1, 6)
    with torch.no_grad():
        got = run_after(PrefixState.build(model, prefix_tokens), new, capture=[(Site.RESID_POST, 0)])
        empty = run_after(PrefixState.build(model, prefix_tokens[:, :0]), new, capture=[(Site.RESID_POST, 0)])
    full = _full(adapter, torch.cat([prefix_tokens, new], 1), [(Site.RESID_POST, 0)])
    alone = _full(adapter, new, [(Site.RESID_POST, 0)])
    assert_close(got[(Site.RESID_POST, 0)], full[(Site.RESID_POST, 0)][:, P:], loose=10)
    assert_close(empty[(Site.RESID_POST, 0)], alone[(Site.RESID_POST, 0)], loose=10)


def test_errors(model):
    prefix = PrefixState.build(model, _tokens(model, 2, P, 0))
    with pytest.raises(PromptError, match="rows"):
        run_after(prefix, _tokens(model, 3, 1, 0), capture=[(Site.RESID_POST, 0)])
    with pytest.raises(PromptError, match="n_ctx"):
        run_after(prefix, _tokens(model, 2, model.cfg.n_ctx, 0), capture=[(Site.RESID_POST, 0)])
    with pytest.raises(OptionError, match="reuse"):
        PrefixState.build(model, _tokens(model, 1, P, 0), reuse="sometimes")


@pytest.mark.parametrize("cut", [0, 2, P])
def test_truncated_prefix_equals_a_prefix_built_at_that_length(model, cut):
    adapter = adapter_for(model)
    last = adapter.n_layers - 1
    prefix_tokens = _tokens(model, 1, P, 0)
    new = _tokens(model, B, N, 3)
    long = PrefixState.build(model, prefix_tokens)
    short = long.truncated(cut)
    assert short.length == cut and long.length == P  # the long prefix is not changed
    direct = PrefixState.build(model, prefix_tokens[:, :cut])
    with torch.no_grad():
        got = run_after(short, new, capture=[(Site.RESID_POST, last)], need_logits=True)
        want = run_after(direct, new, capture=[(Site.RESID_POST, last)], need_logits=True)
        again = run_after(long, new, capture=[(Site.RESID_POST, last)], need_logits=True)
    full = _full(adapter, torch.cat([prefix_tokens.expand(B, -1), new], 1), [], need_logits=True)
    assert_close(got[(Site.RESID_POST, last)], want[(Site.RESID_POST, last)], loose=10)
    assert_close(got.logits, want.logits, loose=10)
    assert_close(again.logits, full.logits[:, P:], loose=10)  # cutting a copy left the long cache whole


@pytest.mark.parametrize("cut", [-1, P + 1])
def test_truncated_rejects_lengths_outside_the_prefix(model, cut):
    with pytest.raises(OptionError, match=rf"valid: 0\.\.{P}"):
        PrefixState.build(model, _tokens(model, 1, P, 0)).truncated(cut)
