"""Independent checks of every capability on one booted model: each returns a matrix cell.

A cell is a dict `{"outcome", "detail", "seconds"}` where outcome is one of
- "works": the capability ran and agreed with an independent reference;
- "refused": a typed lens_inversion error (`li.LensInversionError`, other than the two
  that signal a bug) with its reason, or "upstream: ..." when TransformerLens /
  transformers themselves cannot build, boot or run the model;
- "fails": any other exception (type and message);
- "wrong": it ran but disagreed with the reference (the detail gives the max difference);
- "unchecked": the capability ran but the independent reference could not be computed
  (counted as a failure: nothing in the matrix is silently skipped).

The references never use the code under test: they are plain model calls, TransformerLens
hooks (`model.hooks`, `run_with_cache`) and torch autograd. Hook names used by the
references are TransformerLens's own aliases.
"""

from __future__ import annotations

import contextlib
import math
import signal
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
from catalog import PROMPT, prompt_ids

CHECK_TIMEOUT_S = 120

CAPABILITIES = (
    "boot",
    "lens_final",
    "lens_input",
    "lens_sublayers",
    "grad_x_input",
    "occlusion",
    "exact_first",
    "exact_last",
    "inv_embedding",
    "inv_direct",
    "ablate_zero",
    "zero_attn",
    "zero_mlp",
    "remove_residual_attn",
    "remove_residual_mlp",
    "bypass_layernorm",
    "bypass_final_norm",
    "freeze_layernorm",
    "truncate_width",
    "sweep",
    "report",
    "untouched",
)


class Wrong(AssertionError):
    """The capability ran and its result disagrees with the independent reference."""


class Unchecked(RuntimeError):
    """The independent reference itself could not be computed."""


class CheckTimeout(Exception):
    pass


def cell(outcome: str, detail: str = "", seconds: float = 0.0) -> dict:
    return {"outcome": outcome, "detail": detail, "seconds": round(seconds, 3)}


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(error: BaseException) -> tuple[str, str]:
    import lens_inversion as li
    from lens_inversion.hooks.selfcheck import SelfCheckError

    name = type(error).__name__
    if isinstance(error, Wrong):
        return "wrong", _one_line(error)
    if isinstance(error, Unchecked):
        return "unchecked", _one_line(error)
    if isinstance(error, CheckTimeout):
        return "fails", f"timeout after {CHECK_TIMEOUT_S} s"
    if isinstance(error, li.LensInversionError) and not isinstance(error, (li.HookNeverFiredError, SelfCheckError)):
        return "refused", _one_line(f"{name}: {error}")
    where = ""
    tb = traceback.extract_tb(error.__traceback__)
    if tb:
        last = tb[-1]
        where = f" [{Path(last.filename).name}:{last.lineno}]"
    return "fails", _one_line(f"{name}: {error}{where}")


@contextlib.contextmanager
def _time_limit(seconds: int):
    """SIGALRM-based limit (main thread only; a no-op elsewhere)."""
    try:
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
    except ValueError:  # not the main thread
        yield
        return
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _raise_timeout(signum, frame):
    raise CheckTimeout()


def run_check(fn, *args) -> dict:
    """Run one check; any exception becomes its cell. SelfCheckWarning is an error here, as in
    the project's pytest configuration (a fast path that disagrees with its reference)."""
    from lens_inversion.hooks.selfcheck import SelfCheckWarning

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), _time_limit(CHECK_TIMEOUT_S):
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", SelfCheckWarning)
            detail = fn(*args)
        return cell("works", detail or "", time.perf_counter() - t0)
    except Exception as error:  # noqa: BLE001 - every failure is a cell
        outcome, detail = classify(error)
        return cell(outcome, detail, time.perf_counter() - t0)


# ---------------------------------------------------------------- references (independent)


def prompt_tokens(model) -> torch.Tensor:
    return torch.tensor([prompt_ids(model.tokenizer)])


def logits_of(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).float()


def _maxdiff(a, b) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    if a.shape != b.shape:
        raise Wrong(f"shape {tuple(a.shape)} != reference {tuple(b.shape)}")
    return float((a - b).abs().max()) if a.numel() else 0.0


def _close(what: str, actual, expected, *, rtol: float = 1e-4, atol: float = 1e-5) -> float:
    """Max |actual − expected|; raises Wrong beyond atol + rtol·max|expected|."""
    diff = _maxdiff(actual, expected)
    scale = float(torch.as_tensor(expected).float().abs().max()) if torch.as_tensor(expected).numel() else 0.0
    if not diff <= atol + rtol * scale:  # also catches NaN
        raise Wrong(f"{what}: max diff {diff:.3g} (reference scale {scale:.3g})")
    return diff


class _Fired:
    def __init__(self):
        self.count = 0


def _hook_run(model, tokens, hooks, fired: _Fired | None = None):
    try:
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            out = model(tokens).float()
    except Exception as error:  # noqa: BLE001
        raise Unchecked(f"reference run with TransformerLens hooks failed: {type(error).__name__}: {error}") from error
    if fired is not None and fired.count == 0:
        raise Unchecked(f"reference hook {hooks[0][0]} never fired")
    return out


# ---------------------------------------------------------------- capability checks


def check_lens_final(model, tokens):
    """Rows of the last block's resid_post and the output equal the model's own distribution."""
    import lens_inversion as li

    lens = li.logit_lens(model, tokens[0], compare="final", progress=False)
    lp = torch.log_softmax(logits_of(model, tokens)[0], -1)  # [pos, vocab]
    p = lp.exp()
    k = lens.top_probs.shape[-1]
    ref_top = p.topk(k, -1).values
    ref_entropy = -(p * lp).sum(-1)
    ref_prob = p.max(-1).values
    if lens.kl.dim() != 2:
        raise Wrong(f"one prompt of token ids gave metrics of shape {tuple(lens.kl.shape)}")
    # The output row is the lens's reading of the last block's residual; a separate row for
    # the last block's resid_post (if listed) must agree too.
    last = model.cfg.n_layers - 1
    rows = [i for i, site in enumerate(lens.row_sites) if tuple(site)[1] == last and "post" in str(tuple(site)[0])]
    rows = rows[-1:] + [len(lens.row_labels) - 1]
    worst = 0.0
    for r in rows:
        label = lens.row_labels[r]
        worst = max(worst, _close(f"row {label!r} top-{k} probs vs model", lens.top_probs[r], ref_top, atol=1e-4))
        worst = max(worst, _close(f"row {label!r} prob of the model's top-1", lens.prob[r], ref_prob, atol=1e-4))
        worst = max(worst, _close(f"row {label!r} entropy vs model", lens.entropy[r], ref_entropy, atol=1e-3, rtol=1e-3))
        worst = max(worst, _close(f"row {label!r} KL(model ‖ row)", lens.kl[r], torch.zeros_like(lens.kl[r]), atol=1e-3))
    return f"max diff {worst:.2g}"


def check_lens_input(model, tokens):
    import lens_inversion as li

    lens = li.logit_lens(model, tokens[0], compare="input", progress=False)
    if not torch.isfinite(lens.kl).all():
        raise Wrong("non-finite KL(input ‖ row)")
    # the input row against itself: KL 0
    _close("KL of the input row against itself", lens.kl[0], torch.zeros_like(lens.kl[0]), atol=1e-4)
    return ""


def check_lens_sublayers(model, tokens):
    import lens_inversion as li

    lens = li.logit_lens(model, tokens[0], rows="sublayers", progress=False)
    n = model.cfg.n_layers
    if len(lens.row_labels) < 2 * n + 1:
        raise Wrong(f"expected {2 * n + 2} rows, got {lens.row_labels}")
    if not torch.isfinite(lens.kl).all():
        raise Wrong("non-finite KL")
    return ""


def grad_x_input_reference(model, tokens, token: int) -> torch.Tensor:
    """Autograd on the embedding the model computes (hook_embed's own output), BOS zeroed."""
    try:
        _, cache = model.run_with_cache(tokens, names_filter="hook_embed")
        embeds = cache["hook_embed"].detach().clone().requires_grad_(True)
    except Exception as error:  # noqa: BLE001
        raise Unchecked(f"cannot read hook_embed: {type(error).__name__}: {error}") from error
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: embeds)]):
            out = model(tokens)
        (grad,) = torch.autograd.grad(out[0, -1, token], embeds)
    except Exception as error:  # noqa: BLE001
        raise Unchecked(f"autograd through hook_embed failed: {type(error).__name__}: {error}") from error
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)
        with torch.no_grad():  # TransformerLens keeps the last attention pattern on the module
            model(tokens)
    expected = (grad * embeds.detach()).abs().sum(-1)[0].float()
    expected[0] = 0.0
    return expected


def check_grad_x_input(model, tokens):
    import lens_inversion as li

    result = li.attribute(model, tokens, method="grad_x_input", normalize="none", progress=False)
    predicted = int(logits_of(model, tokens)[0, -1].argmax())
    if result.predicted_token_id != predicted:
        raise Wrong(f"predicted token {result.predicted_token_id} != model's argmax {predicted}")
    expected = grad_x_input_reference(model, tokens, predicted)
    diff = _close("gradient × input vs autograd on hook_embed", result.raw_scores, expected, rtol=1e-3, atol=1e-5)
    return f"max diff {diff:.2g}"


def check_occlusion(model, tokens):
    import lens_inversion as li

    result = li.attribute(model, tokens, method="occlusion", metric="l1", normalize="none", progress=False)
    pad = model.tokenizer.pad_token_id
    clean = logits_of(model, tokens)[0, -1]
    expected = torch.zeros(tokens.shape[1])
    for c in range(1, tokens.shape[1]):
        t = tokens.clone()
        t[0, c] = pad
        expected[c] = (logits_of(model, t)[0, -1] - clean).abs().sum()
    diff = _close("occlusion vs a loop of single forwards", result.raw_scores, expected, rtol=1e-4, atol=1e-4)
    return f"max diff {diff:.2g}"


def _check_exact(model, tokens, layer: int):
    import lens_inversion as li

    target = f"blocks.{layer}.hook_resid_post"
    res = li.invert(model, tokens, target=target, method="exact", progress=False, seed=0)
    got = res.tokens.reshape(-1)
    truth = tokens.reshape(-1)
    if got.shape != truth.shape:
        raise Wrong(f"recovered {tuple(res.tokens.shape)} tokens for a {tuple(tokens.shape)} prompt")
    right = int((got == truth).sum())
    status = getattr(res.verdict, "status", None)
    if right != truth.numel() or status != "verified":
        raise Wrong(f"{target}: recovered {right}/{truth.numel()} tokens, verdict {status!r}")
    return f"{right}/{truth.numel()} verified"


def check_exact_first(model, tokens):
    return _check_exact(model, tokens, 0)


def check_exact_last(model, tokens):
    return _check_exact(model, tokens, model.cfg.n_layers - 1)


def _check_gradient(model, tokens, method):
    import lens_inversion as li

    res = li.invert(model, tokens, target="blocks.0.hook_resid_post", method=method, steps=3, progress=False, seed=0)
    if tuple(res.tokens.shape) != tuple(tokens.shape):
        raise Wrong(f"{tuple(res.tokens.shape)} tokens for a {tuple(tokens.shape)} prompt")
    if res.trace.loss_history is None or not torch.isfinite(torch.as_tensor(res.trace.loss_history)).all():
        raise Wrong("loss history missing or not finite")
    return f"accuracy {res.token_accuracy}"


def check_inv_embedding(model, tokens):
    return _check_gradient(model, tokens, "embedding")


def check_inv_direct(model, tokens):
    return _check_gradient(model, tokens, "direct")


def _spec_check(make_spec, *, changes: bool = True):
    def check(model, tokens):
        import lens_inversion as li

        spec = make_spec(model)
        clean = logits_of(model, tokens)
        with li.ablated(model, spec):
            inside = logits_of(model, tokens)
        after = logits_of(model, tokens)
        restored = _maxdiff(after, clean)
        if restored != 0.0:
            raise Wrong(f"logits after the context differ from before by {restored:.3g}")
        effect = _maxdiff(inside, clean)
        if changes and not effect > 1e-6:
            raise Wrong(f"{spec!r} had no effect on the logits (max diff {effect:.3g})")
        if not changes and not effect <= 1e-4 * max(1.0, float(clean.abs().max())):
            raise Wrong(f"{spec!r} changed the forward values by {effect:.3g}")
        return f"effect {effect:.2g}"

    return check


def _identity_norms_reference(model, tokens, which: str):
    """Logits with TransformerLens's own norm modules replaced by the identity (plain torch forward
    hooks returning the module's input), or None where the norms are not TransformerLens's own
    modules (a bridge wraps Hugging Face's; there the spec check stands alone)."""
    if hasattr(model, "original_model"):
        return None
    names = [f"blocks.{i}.{kind}" for i in range(model.cfg.n_layers)
             for kind in ("ln1", "ln1_post", "ln2", "ln2_post")] if which == "all" else []
    modules = [m for name in [*names, "ln_final"] if (m := _submodule(model, name)) is not None]
    handles = [m.register_forward_hook(lambda module, args, out: args[0]) for m in modules]
    try:
        return logits_of(model, tokens)
    finally:
        for h in handles:
            h.remove()


def _submodule(model, name: str):
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return None
    return None if isinstance(module, torch.nn.Identity) else module


def _bypass_check(which: str):
    def check(model, tokens):
        import lens_inversion as li

        spec = li.BypassLayerNorm() if which == "all" else li.BypassLayerNorm(which=which)
        detail = _spec_check(lambda m: spec)(model, tokens)
        reference = _identity_norms_reference(model, tokens, which)
        if reference is None:
            return detail
        with li.ablated(model, spec):
            inside = logits_of(model, tokens)
        diff = _close(f"{spec!r} vs the norm modules replaced by the identity", inside, reference,
                      rtol=1e-4, atol=1e-4)
        return f"{detail}; vs identity norms {diff:.2g}"

    return check


def _layer_with(model, hook: str) -> int:
    """The first block that has `hook` (a hybrid's layer 0 may be a state-space layer); else 0."""
    names = getattr(model, "hook_dict", {})
    for layer in range(model.cfg.n_layers):
        if f"blocks.{layer}.{hook}" in names:
            return layer
    return 0


def _specs():
    import lens_inversion as li

    return {
        "ablate_zero": _spec_check(lambda m: li.Ablate("blocks.0.hook_resid_post[:, 1:, :]")),
        "zero_attn": _spec_check(lambda m: li.ZeroComponent(_layer_with(m, "hook_attn_out"), "attn")),
        "zero_mlp": _spec_check(lambda m: li.ZeroComponent(_layer_with(m, "hook_mlp_out"), "mlp")),
        "remove_residual_attn": _spec_check(lambda m: li.RemoveResidual(_layer_with(m, "hook_attn_out"), around="attn")),
        "remove_residual_mlp": _spec_check(lambda m: li.RemoveResidual(_layer_with(m, "hook_mlp_out"), around="mlp")),
        "bypass_layernorm": _bypass_check("all"),
        "bypass_final_norm": _bypass_check("final"),
        "freeze_layernorm": _spec_check(lambda m: li.FreezeLayerNorm(), changes=False),
        "truncate_width": _spec_check(lambda m: li.TruncateWidth("resid_post", keep=m.cfg.d_model // 2)),
    }


def check_sweep(model, tokens):
    """Zero-ablation sweep of resid_post, KL at the last position, vs a loop of hooked forwards."""
    import lens_inversion as li

    result = li.ablation_sweep(model, tokens, ablation="zero", target="resid_post", metric="kl", progress=False)
    clean = torch.log_softmax(logits_of(model, tokens)[0, -1], -1)
    n, pos = model.cfg.n_layers, tokens.shape[1]
    expected = torch.zeros(n, pos)
    for layer in range(n):
        for p in range(pos):
            fired = _Fired()

            def zero(x, hook, p=p, fired=fired):
                fired.count += 1
                x = x.clone()
                x[:, p] = 0
                return x

            out = _hook_run(model, tokens, [(f"blocks.{layer}.hook_resid_post", zero)], fired)
            lq = torch.log_softmax(out[0, -1], -1)
            expected[layer, p] = (clean.exp() * (clean - lq)).sum()
    if list(result.layers) != list(range(n)) or list(result.columns) != list(range(pos)):
        raise Wrong(f"sweep grid layers={result.layers} columns={result.columns}")
    diff = _close("sweep vs a loop of hooked forwards", result.values, expected, rtol=1e-3, atol=1e-4)
    return f"max diff {diff:.2g}"


def check_report(model, tokens):
    import lens_inversion as li

    with tempfile.TemporaryDirectory(prefix="li-arch-report-") as d:
        path = Path(d) / "report.html"
        li.report(model, PROMPT, path=path, inversion_layers=[0], gradient_steps=1, progress=False)
        size = path.stat().st_size if path.exists() else 0
    if size < 1000:
        raise Wrong(f"report file has {size} bytes")
    return f"{size // 1024} KiB"


CHECKS = {
    "lens_final": check_lens_final,
    "lens_input": check_lens_input,
    "lens_sublayers": check_lens_sublayers,
    "grad_x_input": check_grad_x_input,
    "occlusion": check_occlusion,
    "exact_first": check_exact_first,
    "exact_last": check_exact_last,
    "inv_embedding": check_inv_embedding,
    "inv_direct": check_inv_direct,
    "sweep": check_sweep,
    "report": check_report,
}


# ---------------------------------------------------------------- one (architecture, mode)


def boot(arch: str, mode: str):
    """(model, boot cell). The model is None when the cell is a refusal or failure."""
    import catalog
    import hooked

    import lens_inversion as li

    t0 = time.perf_counter()
    if hooked.is_hooked(arch):
        return _boot_hooked(arch, mode, t0)
    try:
        path = catalog.model_dir(arch)
    except catalog.BuildError as error:
        return None, cell("refused", _one_line(f"upstream: build: {error}"), time.perf_counter() - t0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = li.load_model(str(path), device="cpu", compatibility_mode=(mode == "compat"))
    except li.LensInversionError as error:
        return None, cell("refused", _one_line(f"{type(error).__name__}: {error}"), time.perf_counter() - t0)
    except Exception as error:  # noqa: BLE001 - TransformerLens's own boot / compatibility mode
        stage = "compatibility mode" if mode == "compat" else "boot"
        return None, cell("refused", _one_line(f"upstream: {stage}: {type(error).__name__}: {error}"),
                          time.perf_counter() - t0)
    tokens = prompt_tokens(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = logits_of(model, tokens)
    except Exception as error:  # noqa: BLE001
        return None, cell("refused", _one_line(f"upstream: forward: {type(error).__name__}: {error}"),
                          time.perf_counter() - t0)
    detail = ""
    reference = path / "hf_logprobs.pt"
    if reference.exists():
        saved = torch.load(reference)
        if tuple(saved["tokens"].shape) == tuple(tokens.shape) and torch.equal(saved["tokens"], tokens):
            diff = _maxdiff(torch.log_softmax(out[0], -1), saved["logprobs"])
            detail = f"bridge vs Hugging Face log-probs {diff:.2g}"
            if not diff <= 1e-3:
                return model, cell("refused", f"upstream: bridge output differs from Hugging Face's: max diff "
                                   f"{diff:.3g} in log-probs", time.perf_counter() - t0)
    if not torch.isfinite(out).all():
        return None, cell("refused", "upstream: the bridge's logits are not finite", time.perf_counter() - t0)
    return model, cell("works", detail, time.perf_counter() - t0)


def _boot_hooked(arch: str, mode: str, t0: float):
    """A HookedTransformer config: built (and in "compat" mode weight-processed) by TransformerLens.

    Its reference is the unprocessed model: processing must not change the log-probabilities.
    """
    import hooked

    stage = "build"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mode == "compat":
                stage = "process_weights_"
            model, reference, tokens = hooked.build(arch, processed=(mode == "compat"))
            out = logits_of(model, tokens)
    except Exception as error:  # noqa: BLE001 - TransformerLens's own construction / processing
        return None, cell("refused", _one_line(f"upstream: {stage}: {type(error).__name__}: {error}"),
                          time.perf_counter() - t0)
    if not torch.isfinite(out).all():
        return None, cell("refused", "upstream: the model's logits are not finite", time.perf_counter() - t0)
    diff = _maxdiff(torch.log_softmax(out[0], -1), reference)
    if not diff <= 1e-3:
        return model, cell("refused", f"upstream: processed weights change the log-probs: max diff {diff:.3g}",
                           time.perf_counter() - t0)
    flags = hooked.processing_flags(model.cfg) if mode == "compat" else {}
    what = ("processed " + ", ".join(k for k, v in flags.items() if v) + " vs unprocessed") if mode == "compat" \
        else "rebuilt from its config vs first build"
    if mode == "raw":  # the same config and seed must give the same model
        again, _, _ = hooked.build(arch, processed=False)
        diff = _maxdiff(torch.log_softmax(logits_of(again, tokens)[0], -1), reference)
        if diff != 0.0:
            return None, cell("wrong", f"two builds of {arch} from one config and seed differ by {diff:.3g} in "
                              "log-probs", time.perf_counter() - t0)
    return model, cell("works", f"{what}: log-probs {diff:.2g}; max |logit| {float(out.abs().max()):.3g}",
                       time.perf_counter() - t0)


def run_matrix_row(arch: str, mode: str) -> dict:
    """Every capability of one (architecture, mode): {capability: cell}."""
    from untouched import Snapshot

    torch.manual_seed(0)
    model, boot_cell = boot(arch, mode)
    cells = {"boot": boot_cell}
    if model is None:
        reason = boot_cell["detail"] if boot_cell["outcome"] == "refused" else f"boot {boot_cell['outcome']}"
        for cap in CAPABILITIES[1:]:
            cells[cap] = cell(boot_cell["outcome"], reason if boot_cell["outcome"] == "refused" else "not booted")
        return cells
    tokens = prompt_tokens(model)
    checks = dict(CHECKS)
    checks.update(_specs())
    changed_by = []
    snapshot = Snapshot(model)
    for cap in CAPABILITIES[1:-1]:
        cells[cap] = run_check(checks[cap], model, tokens)
        try:
            snapshot.assert_unchanged()
        except AssertionError as error:
            error = _explain(snapshot, model, error)
            changed_by.append(f"{cap}: {error}")
            if cells[cap]["outcome"] in ("works", "refused"):
                cells[cap] = cell("fails", _one_line(f"model changed: {error}"), cells[cap]["seconds"])
            snapshot = Snapshot(model)
    cells["untouched"] = cell("fails", _one_line("; ".join(changed_by))) if changed_by else cell("works")
    return cells


def _explain(snapshot, model, error) -> str:
    """The Snapshot's message, with the modules whose hooks changed."""
    from untouched import _hooks

    message = str(error)
    if "hooks" in message:
        now = _hooks(model)
        changed = sorted(f"{name}.{attr}" for (name, attr) in set(now) | set(snapshot.hooks)
                         if now.get((name, attr)) != snapshot.hooks.get((name, attr)))
        message += f" ({len(changed)} modules: {', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})"
    return message


def summarize(cells: dict) -> dict:
    counts: dict[str, int] = {}
    for c in cells.values():
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    return counts


def seconds(cells: dict) -> float:
    return sum(c["seconds"] for c in cells.values() if not math.isnan(c["seconds"]))
