"""Bad input across the public API: one of our error types, a message that says what is wrong,
echoes what was received and names what is valid, and a model left exactly as it was.

Each case is (id, call(model), error type, [what-is-wrong, what-was-received, what-is-valid]
regexes). The three regexes are searched in the message separately, so a case passes only
when all three parts are present.
"""

import re

import pytest
import torch
from fixture_models import build, has_hooked_transformer
from untouched import Snapshot

import lens_inversion as li

pytestmark = pytest.mark.backend_generic

PROMPT = "The sky is blue."
T = "blocks.0.hook_resid_post"
Q = dict(progress=False)
D_MODEL, N_CTX, D_VOCAB, N_LAYERS = 64, 32, 300, 2  # the fixture models' sizes (tests/fixture_models.py)


def _activation(model, *, poison=None, device=None, shape=None):
    act = li.Target.parse(T).extract(model, PROMPT)
    if poison is not None:
        act = act.clone()
        act[0, 2, 5] = poison
    if shape is not None:
        act = act[tuple(slice(0, n) for n in shape)]
    return act if device is None else act.to(device)


def _sweep(model, **options):
    return li.ablation_sweep(model, PROMPT, **Q, **options)


def _invert(model, prompt=PROMPT, **options):
    return li.invert(model, prompt, **{"target": T, "steps": 2, **Q, **options})


def _exact(model, prompt=PROMPT, **options):
    return li.invert(model, prompt, **{"target": T, "method": "exact", **Q, **options})


def _enter(model, *specs):
    with li.ablated(model, *specs), torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))


def _faithfulness(model, **options):
    return li.faithfulness(model, PROMPT, li.attribute(model, PROMPT, **Q), **Q, **options)


T_, P, OPT, U = li.TargetError, li.PromptError, li.OptionError, li.UnsupportedModelError

CASES = [
    # ----- prompts ------------------------------------------------------------------------
    ("empty-prompt", lambda m: li.logit_lens(m, "", **Q), P, ["empty", "got ''", "at least one character"]),
    ("empty-prompt-in-list", lambda m: li.attribute(m, ["A cat", ""], **Q), P, ["empty", "got ''", "at least one character"]),
    ("empty-list", lambda m: li.logit_lens(m, [], **Q), P, ["must be a string", r"got list \[\]", "non-empty list of strings"]),
    ("prompt-not-text", lambda m: li.attribute(m, 3.5, **Q), P, ["must be a string", "got float 3.5", "LongTensor of ids"]),
    (
        "prompt-over-n_ctx",
        lambda m: li.logit_lens(m, "blue " * 40, **Q),
        P,
        ["prompt has", r"has \d+ tokens", rf"context \(n_ctx\) is {N_CTX}"],
    ),
    (
        "token-ids-out-of-vocab",
        lambda m: li.attribute(m, torch.tensor([[1, 2, 4000]]), **Q),
        P,
        ["Token ids must lie", "to 4000", rf"\[0, {D_VOCAB}\)"],
    ),
    (
        "token-ids-negative",
        lambda m: li.ablation_sweep(m, torch.tensor([-1, 2, 3]), **Q),
        P,
        ["Token ids must lie", "from -1", rf"\[0, {D_VOCAB}\)"],
    ),
    (
        "token-ids-float-dtype",
        lambda m: li.logit_lens(m, torch.tensor([[1.0, 2.0]]), **Q),
        P,
        ["must hold integer", "torch.float32", "integer ids"],
    ),
    (
        "token-ids-3d",
        lambda m: li.logit_lens(m, torch.ones(1, 2, 3, dtype=torch.long), **Q),
        P,
        ["must be", r"\(1, 2, 3\)", r"\[pos\] or \[batch, pos\]"],
    ),
    (
        "token-ids-empty",
        lambda m: li.logit_lens(m, torch.ones(1, 0, dtype=torch.long), **Q),
        P,
        ["non-empty", r"\(1, 0\)", r"\[batch, pos\]"],
    ),
    (
        "token-ids-meta-device",
        lambda m: li.logit_lens(m, torch.ones(1, 3, dtype=torch.long, device="meta"), **Q),
        P,
        ["hold no ids", "'meta'", "'cpu' or the model's device"],
    ),
    ("sweep-batch-of-prompts", lambda m: li.ablation_sweep(m, ["A", "B"], **Q), P, ["one prompt", "got 2", "each prompt separately"]),
    # ----- models -------------------------------------------------------------------------
    (
        "model-nn-linear",
        lambda m: li.logit_lens(torch.nn.Linear(4, 4), PROMPT),
        U,
        ["Expected a TransformerLens model", "got Linear", "li.load_model"],
    ),
    (
        "model-a-string",
        lambda m: li.attribute("gpt2", PROMPT),
        U,
        ["Expected a TransformerLens model", "got str 'gpt2'", "TransformerBridge or HookedTransformer"],
    ),
    (
        "model-none",
        lambda m: li.invert(None, PROMPT, target=T),
        U,
        ["Expected a TransformerLens model", "got NoneType None", "li.load_model"],
    ),
    (
        "model-none-ablated",
        lambda m: _enter(None, li.RemoveResidual(0)),
        U,
        ["Expected a TransformerLens model", "got NoneType", "li.load_model"],
    ),
    (
        "load-missing-dir",
        lambda m: li.load_model("./no/such/model"),
        OPT,
        ["No model directory", "'./no/such/model'", "'tiny'.*local Hugging Face"],
    ),
    ("load-not-a-name", lambda m: li.load_model(42), OPT, ["must be a string or path", "got int 42", "'tiny'"]),
    (
        "load-int-dtype",
        lambda m: li.load_model("tiny", dtype=torch.int8),
        OPT,
        ["not valid", "torch.int8", "torch.float16, torch.bfloat16"],
    ),
    ("load-dtype-name", lambda m: li.load_model("tiny", dtype="half-ish"), OPT, ["not valid", "'half-ish'", "float16, bfloat16"]),
    ("load-bad-device", lambda m: li.load_model("tiny", device="tpu9"), OPT, ["not a torch device", "'tpu9'", "'cpu', 'cuda'"]),
    # ----- layers, sites, slices ----------------------------------------------------------
    (
        "lens-layer-out-of-range",
        lambda m: li.logit_lens(m, PROMPT, layers=[N_LAYERS], **Q),
        T_,
        ["out of range", f"={N_LAYERS}", rf"layers 0\.\.{N_LAYERS - 1}"],
    ),
    (
        "lens-layer-not-int",
        lambda m: li.logit_lens(m, PROMPT, layers=["1"], **Q),
        T_,
        ["not an integer layer", "'1'", rf"0\.\.{N_LAYERS - 1}"],
    ),
    ("sweep-negative-layer-out-of-range", lambda m: _sweep(m, layers=[-3]), T_, ["out of range", "=-3", rf"-{N_LAYERS}\.\.-1"]),
    (
        "target-layer-out-of-range",
        lambda m: _invert(m, target="blocks.5.hook_resid_post"),
        T_,
        ["out of range", "blocks.5", rf"layers 0\.\.{N_LAYERS - 1}"],
    ),
    (
        "target-unknown-site",
        lambda m: li.attribute(m, PROMPT, target="blocks.0.hook_resid_sideways", **Q),
        T_,
        ["Unknown site", "'resid_sideways'", "resid_pre, resid_mid, resid_post"],
    ),
    (
        "target-short-unknown-site",
        lambda m: li.Target.parse("resid_middle.1").extract(m, PROMPT),
        T_,
        ["Unknown site", "'resid_middle'", "valid sites"],
    ),
    ("target-empty-brackets", lambda m: li.Target.parse(f"{T}[]"), T_, ["Malformed slice", r"\[\]", "1 to 3 comma-separated"]),
    (
        "target-unclosed-bracket",
        lambda m: li.Target.parse(f"{T}[:, 1:"),
        T_,
        ["Malformed target", r"\[:, 1:'", r"NAME\[batch, tokens, features\]"],
    ),
    ("target-float-index", lambda m: li.Target.parse(f"{T}[:, 1.5, :]"), T_, ["Cannot read", "'1.5'", "integer or a slice"]),
    (
        "target-empty-token-slice",
        lambda m: li.Target.parse(f"{T}[:, 5:2, :]").extract(m, PROMPT),
        T_,
        ["selects nothing", "'5:2'", r"valid indices: 0\.\.\d+"],
    ),
    (
        "target-features-beyond-d_model",
        lambda m: _invert(m, target=f"{T}[:, :, {D_MODEL}:]"),
        T_,
        ["selects nothing", f"'{D_MODEL}:'", rf"0\.\.{D_MODEL - 1}"],
    ),
    (
        "target-feature-index-beyond-d_model",
        lambda m: li.attribute(m, PROMPT, target=f"{T}[:, :, 70]", **Q),
        T_,
        ["out of range", "index 70", rf"-{D_MODEL}\.\.{D_MODEL - 1}"],
    ),
    ("target-token-beyond-prompt", lambda m: _exact(m, target=f"{T}[:, 40, :]"), T_, ["out of range", "index 40", r"valid: -\d+\.\.\d+"]),
    (
        "target-tokens-as-string",
        lambda m: li.Target(site="resid_post", layer=0, tokens="1:"),
        T_,
        ["must be an int or a slice", "'1:'", "int or a slice"],
    ),
    ("target-missing-layer", lambda m: li.Target(site="mlp_out"), T_, ["needs an integer layer", "got None", "integer layer"]),
    ("target-not-a-string", lambda m: li.Target.parse(3), T_, ["A target is a Target or a string", "got int", "blocks.3.hook_resid_post"]),
    ("invert-no-targets", lambda m: _invert(m, target=[]), T_, ["at least one target", r"got \[\]", "blocks.0.hook_resid_post"]),
    (
        "lens-positions-empty-slice",
        lambda m: li.logit_lens(m, PROMPT, positions=slice(50, 60), **Q),
        OPT,
        ["selects no position", "slice.50, 60", r"valid: 0\.\.\d+"],
    ),
    ("sweep-position-not-int", lambda m: _sweep(m, positions=["2"]), T_, ["must be an int or a slice", "'2'", "int or a slice"]),
    ("sweep-features-as-string", lambda m: _sweep(m, features="0:8"), T_, ["must be an int or a slice", "'0:8'", "int or a slice"]),
    (
        "sweep-features-beyond-d_model",
        lambda m: _sweep(m, features=slice(100, 200)),
        T_,
        ["selects nothing", "'100:200'", rf"0\.\.{D_MODEL - 1}"],
    ),
    (
        "sweep-truncate-width-beyond",
        lambda m: _sweep(m, ablation="truncate", widths=[D_MODEL + 1]),
        OPT,
        ["widths must be", rf"\[{D_MODEL + 1}\]", rf"\[0, {D_MODEL}\]"],
    ),
    ("sweep-site-logits", lambda m: _sweep(m, site="logits"), OPT, ["cannot be ablated", "'logits'", "resid_pre, resid_mid"]),
    # ----- tokens to allow ----------------------------------------------------------------
    ("exact-allowed-empty", lambda m: _exact(m, allowed_tokens=[]), OPT, ["allowed_tokens is empty", "empty", "at least one token"]),
    (
        "exact-allowed-float-id",
        lambda m: _exact(m, allowed_tokens=[1.5, 3]),
        OPT,
        ["integer ids", "float 1.5", "single-token strings"],
    ),
    (
        "gradient-allowed-empty-mask",
        lambda m: _invert(m, allowed_tokens=torch.zeros(D_VOCAB, dtype=torch.bool)),
        OPT,
        ["allowed_tokens is empty", "empty", "at least one token"],
    ),
    (
        "exact-allowed-out-of-vocab",
        lambda m: _exact(m, allowed_tokens=[5, D_VOCAB + 7]),
        OPT,
        ["outside", f"{D_VOCAB + 7}", rf"\[0, {D_VOCAB}\)"],
    ),
    (
        "gradient-allowed-out-of-vocab",
        lambda m: _invert(m, allowed_tokens=[-3]),
        OPT,
        ["not a single token id", "-3", rf"\[0, {D_VOCAB}\)"],
    ),
    (
        "decode-allowed-a-string",
        lambda m: li.decode_embeddings(m, torch.randn(1, 3, D_MODEL), allowed_tokens="abc"),
        OPT,
        ["must be a list", "'abc'", r"\['abc'\]"],
    ),
    (
        "decode-allowed-float-tensor",
        lambda m: li.decode_embeddings(m, torch.randn(1, 3, D_MODEL), allowed_tokens=torch.tensor([1.0])),
        OPT,
        ["must hold integer ids", "torch.float32", "boolean mask"],
    ),
    (
        "decode-allowed-mask-shape",
        lambda m: li.decode_embeddings(m, torch.randn(1, 3, D_MODEL), allowed_tokens=torch.ones(5, dtype=torch.bool)),
        OPT,
        ["mask must have shape", r"\(5,\)", rf"\({D_VOCAB},\)"],
    ),
    (
        "exact-allowed-multi-token-string",
        lambda m: _exact(m, allowed_tokens=["The sky is blue"]),
        P,
        ["not a single token", "'The sky is blue'", rf"\[0, {D_VOCAB}\)"],
    ),
    # ----- activations and tensors --------------------------------------------------------
    (
        "activation-nan",
        lambda m: _invert(m, _activation(m, poison=float("nan"))),
        P,
        ["NaN or inf", r"\(1 of \d+ entries\)", "finite values"],
    ),
    (
        "activation-inf-exact",
        lambda m: _exact(m, _activation(m, poison=float("inf"))),
        P,
        ["NaN or inf", r"\(1 of \d+ entries\)", "finite values"],
    ),
    (
        "activation-wrong-width",
        lambda m: _exact(m, _activation(m, shape=(1, 11, 10))),
        P,
        ["has shape", r"\(1, 11, 10\)", rf"\[batch, 11, {D_MODEL}\]"],
    ),
    (
        "activation-wrong-ndim",
        lambda m: _invert(m, torch.zeros(D_MODEL)),
        P,
        ["must be", rf"\({D_MODEL},\)", r"\[batch, tokens, features\]"],
    ),
    ("activation-meta-device", lambda m: _invert(m, _activation(m, device="meta")), P, ["holds no values", "'meta'", "real tensor"]),
    (
        "activation-npos-beyond-context",
        lambda m: _invert(m, _activation(m), n_pos=N_CTX + 1),
        P,
        ["must lie", f"n_pos={N_CTX + 1}", rf"1\.\.{N_CTX}"],
    ),
    (
        "decode-nan",
        lambda m: li.decode_embeddings(m, torch.full((1, 2, D_MODEL), float("nan"))),
        OPT,
        ["NaN or inf", rf"\({2 * D_MODEL} of {2 * D_MODEL} entries\)", "finite"],
    ),
    (
        "decode-wrong-width",
        lambda m: li.decode_embeddings(m, torch.randn(2, 3, 10)),
        OPT,
        ["should be", r"\(2, 3, 10\)", f"d_model={D_MODEL}"],
    ),
    (
        "decode-int-dtype",
        lambda m: li.decode_embeddings(m, torch.ones(1, 3, D_MODEL, dtype=torch.long)),
        OPT,
        ["must be a float tensor", "torch.int64", "give floats"],
    ),
    (
        "decode-meta-device",
        lambda m: li.decode_embeddings(m, torch.randn(1, 3, D_MODEL, device="meta")),
        OPT,
        ["holds no values", "'meta'", "real tensor"],
    ),
    (
        "decode-not-a-tensor",
        lambda m: li.decode_embeddings(m, [[0.0] * D_MODEL]),
        OPT,
        ["must be a float tensor", "got list", f"d_model={D_MODEL}"],
    ),
    # ----- methods, metrics, modes, numbers ------------------------------------------------
    ("invert-unknown-method", lambda m: _invert(m, method="magic"), OPT, ["not valid", "'magic'", "'embedding', 'direct', 'exact'"]),
    ("exact-unknown-option", lambda m: _exact(m, steps=5), OPT, ["Unknown option", "steps", "beam.*tolerance"]),
    ("invert-unknown-loss", lambda m: _invert(m, loss="l7"), OPT, ["not valid", "'l7'", "'l1'"]),
    ("invert-negative-steps", lambda m: _invert(m, steps=-5), OPT, ["positive integer", "-5", "positive integer"]),
    ("invert-lr-a-string", lambda m: _invert(m, lr="fast"), OPT, ["positive number", "'fast'", "None for the optimizer's default"]),
    ("invert-seed-a-string", lambda m: _invert(m, seed="42"), OPT, ["not valid", "seed='42'", "integer or None"]),
    ("exact-bad-tolerance", lambda m: _exact(m, tolerance=2.0), OPT, ["must be a number", "tolerance=2.0", r"\[0, 1\)"]),
    (
        "exact-progress-not-bool",
        lambda m: li.invert(m, PROMPT, target=T, method="exact", progress="no"),
        OPT,
        ["not valid", "'no'", "True, False"],
    ),
    ("lens-unknown-compare", lambda m: li.logit_lens(m, PROMPT, compare="median", **Q), OPT, ["not valid", "'median'", "'final', 'input'"]),
    ("lens-top_k-zero", lambda m: li.logit_lens(m, PROMPT, top_k=0, **Q), OPT, ["must be an int", "top_k=0", rf"1\.\.{D_VOCAB}"]),
    (
        "lens-top_k-beyond-vocab",
        lambda m: li.logit_lens(m, PROMPT, top_k=D_VOCAB + 1, **Q),
        OPT,
        ["must be an int", f"top_k={D_VOCAB + 1}", rf"1\.\.{D_VOCAB}"],
    ),
    (
        "lens-plot-unknown-metric",
        lambda m: li.logit_lens(m, PROMPT, **Q).plot(metric="accuracy"),
        OPT,
        ["not valid", "'accuracy'", "'kl', 'rank'"],
    ),
    (
        "decode-top_k-bool",
        lambda m: li.decode_embeddings(m, torch.randn(1, 2, D_MODEL), top_k=True),
        OPT,
        ["positive integer", "True", "positive integer"],
    ),
    (
        "attribute-unknown-metric",
        lambda m: li.attribute(m, PROMPT, method="occlusion", metric="l2", **Q),
        OPT,
        ["not valid", "'l2'", "'kl'"],
    ),
    (
        "attribute-nan-weights",
        lambda m: li.attribute(m, PROMPT, method="combined", weights=(float("nan"), 1.0), **Q),
        OPT,
        ["finite", "nan", "grad_x_input, occlusion"],
    ),
    (
        "sweep-unknown-ablation",
        lambda m: _sweep(m, ablation="melt"),
        OPT,
        ["not valid", "'melt'", "'zero', 'mean', 'resample', 'truncate'"],
    ),
    ("sweep-unknown-metric", lambda m: _sweep(m, metric="accuracy"), OPT, ["not valid", "'accuracy'", "'kl', 'logit_diff'"]),
    ("sweep-seed-a-float", lambda m: _sweep(m, seed=1.5), OPT, ["not valid", "seed=1.5", "an integer"]),
    ("ablation-unknown-mode", lambda m: _enter(m, li.Ablate(T, mode="melt")), OPT, ["not valid", "'melt'", "'zero', 'mean', 'resample'"]),
    (
        "ablation-unknown-norm",
        lambda m: _enter(m, li.BypassLayerNorm(which="ln3")),
        OPT,
        ["not valid", "'ln3'", "'ln1', 'ln2', 'final', 'all'"],
    ),
    ("ablation-not-a-spec", lambda m: _enter(m, "zero"), OPT, ["Not an ablation spec", "'zero'", "RemoveResidual, ZeroComponent"]),
    ("ablation-no-spec", lambda m: _enter(m), OPT, ["no ablation spec", "Got no", r"RemoveResidual\(0"]),
    (
        "walk-negative-steps",
        lambda m: li.orthogonal_walk(m, PROMPT, target=T, steps=-1, **Q),
        OPT,
        ["must be a positive int", "-1", "positive int"],
    ),
    ("faithfulness-zero-steps", lambda m: _faithfulness(m, steps=0), OPT, ["must be None", "got 0", "positive integer"]),
    ("faithfulness-seed-none", lambda m: _faithfulness(m, seed=None), OPT, ["not valid", "seed=None", "an integer"]),
]


# GPT-2-like on every backend; on TransformerLens 3.x (the backend_generic lane) HookedTransformer too.
MODELS = ["gpt2-native", *(["gpt2-hooked"] if has_hooked_transformer() else [])]


@pytest.fixture(scope="module", params=MODELS)
def gpt2(request):
    return build(request.param)


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("call, error, parts", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_gets_a_clear_error(gpt2, call, error, parts):
    snapshot = Snapshot(gpt2)
    with pytest.raises(error) as info:
        call(gpt2)
    assert isinstance(info.value, li.LensInversionError) and isinstance(info.value, ValueError)
    message = str(info.value)
    for role, pattern in zip(("what is wrong", "what was received", "what is valid"), parts, strict=True):
        assert re.search(pattern, message), f"the message does not say {role} ({pattern!r}): {message}"
    snapshot.assert_unchanged()


def test_exact_options_list_matches_the_signature():
    """`invert(..., method="exact")` rejects unknown options from this list; it must not drift."""
    import inspect

    from lens_inversion.inversion.exact import EXACT_OPTIONS, invert_exact

    params = inspect.signature(invert_exact).parameters
    # `strict` is every public function's own keyword (the preserves_model wrapper takes it)
    keyword_only = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"target", "strict"}
    assert set(EXACT_OPTIONS) == keyword_only


def test_integer_like_positions_are_still_accepted(gpt2):
    """The stricter index check keeps NumPy and 0-d tensor integers working."""
    import numpy as np

    plain = li.ablation_sweep(gpt2, PROMPT, positions=[2, 3], layers=[0], **Q)
    other = li.ablation_sweep(gpt2, PROMPT, positions=[np.int64(2), torch.tensor(3)], layers=0, **Q)
    assert torch.equal(plain.values, other.values)
