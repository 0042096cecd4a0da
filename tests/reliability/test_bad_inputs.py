"""Bad input across the public API: one of our error types, a message that says what is wrong,
echoes what was received and names what is valid, and a model left exactly as it was.

Each case is (id, call(model), error type, [what-is-wrong, what-was-received, what-is-valid]
regexes). The three regexes are searched in the message separately, so a case passes only
when all three parts are present.
"""

import re
import tempfile

import pytest
import torch
from fixture_models import build, has_hooked_transformer
from old_spelling import with_old_spelling
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
    return li.ablation_sweep(model, PROMPT, **{**Q, **options})


def _invert(model, prompt=PROMPT, **options):
    return li.invert(model, prompt, **{"target": T, "steps": 2, **Q, **options})


def _exact(model, prompt=PROMPT, **options):
    return li.invert(model, prompt, **{"target": T, "method": "exact", **Q, **options})


def _enter(model, *specs):
    with li.ablated(model, *specs), torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))


def _faithfulness(model, **options):
    return li.faithfulness(model, PROMPT, li.attribute(model, PROMPT, **Q), **{**Q, **options})


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
    ("lens-not-a-lens", lambda m: li.logit_lens(m, PROMPT, lens="tuned", **Q), OPT,
     ["is not a lens", "lens='tuned'", "'logit', a li.TunedLens"]),
    ("lens-wrong-type", lambda m: li.logit_lens(m, PROMPT, lens=3, **Q), OPT,
     ["lens must be", "got int", "a TransformerLens JacobianLens or a callable"]),
    ("lens-callable-wrong-shape", lambda m: li.logit_lens(m, PROMPT, lens=lambda r, name: r[..., :2], **Q), OPT,
     ["must return a tensor of the residual's shape", r"returned \(1, 2\)", "blocks.0.hook_resid_pre"]),
    ("report-lenses-not-a-list", lambda m: li.report(m, PROMPT, path="unused-report.html", lenses="tuned", **Q), OPT,
     ["lenses must be a list", "got str", "trained lenses or None"]),
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
    ("sweep-position-not-int", with_old_spelling(lambda m: _sweep(m, positions=["2"])), T_,
     ["must be an int or a slice", "'2'", "int or a slice"]),
    ("sweep-features-as-string", with_old_spelling(lambda m: _sweep(m, features="0:8")), T_,
     ["must be an int or a slice", "'0:8'", "int or a slice"]),
    (
        "sweep-features-beyond-d_model",
        with_old_spelling(lambda m: _sweep(m, features=slice(100, 200))),
        T_,
        ["selects nothing", "'100:200'", rf"0\.\.{D_MODEL - 1}"],
    ),
    (
        "sweep-truncate-width-beyond",
        lambda m: _sweep(m, ablation="truncate", widths=[D_MODEL + 1]),
        OPT,
        ["widths must be", rf"\[{D_MODEL + 1}\]", rf"\[0, {D_MODEL}\]"],
    ),
    ("sweep-site-logits", with_old_spelling(lambda m: _sweep(m, site="logits")), OPT,
     ["cannot be ablated", "'logits'", "resid_pre, resid_mid"]),
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
        ["outside", "-3", rf"\[0, {D_VOCAB}\)"],
    ),
    (
        "exact-allowed-not-a-collection",
        lambda m: _exact(m, allowed_tokens=5),
        OPT,
        ["must be a list of token ids", "got int 5", "boolean mask"],
    ),
    (
        "gradient-restarts-beyond-memory-bound",
        lambda m: _invert(m, n_restarts=4097),
        OPT,
        ["n_restarts must be", "got 4097", r"in 1\.\.4096"],
    ),
    (
        "gradient-decoding-empty-string",
        lambda m: _invert(m, decoding=""),
        OPT,
        ["decoding", "''", "pinv"],
    ),
    (
        "gradient-steps-beyond-64-bits",
        lambda m: _invert(m, steps=2**64),
        OPT,
        ["steps must be", str(2**64), r"at most 2\*\*63 - 1"],
    ),
    (
        "sweep-widths-without-truncate",
        lambda m: _sweep(m, widths=[8]),
        OPT,
        ["applies only to ablation='truncate'", r"widths=\[8\]", "ablation='zero'"],
    ),
    (
        "sweep-reference-with-zero",
        lambda m: _sweep(m, reference="A cat"),
        OPT,
        ["applies only to ablation='mean' or 'resample'", "reference='A cat'", "ablation='zero'"],
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
        OPT,
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
    (
        "invert-lr-a-string",
        lambda m: _invert(m, lr="fast"),
        OPT,
        ["lr must be a finite number", "'fast'", r"> 0 or None \(for the optimizer's default\)"],
    ),
    ("invert-seed-a-string", lambda m: _invert(m, seed="42"), OPT, ["not valid", "seed='42'", r"integer in \[0, 2\*\*63 - 1\] or None"]),
    ("exact-bad-tolerance", lambda m: _exact(m, tolerance=2.0), OPT, ["tolerance must be a finite number", "got 2.0", r"\[0, 1\)"]),
    (
        "exact-progress-not-bool",
        lambda m: li.invert(m, PROMPT, target=T, method="exact", progress="no"),
        OPT,
        ["not valid", "'no'", "True, False"],
    ),
    ("lens-unknown-compare", lambda m: li.logit_lens(m, PROMPT, compare="median", **Q), OPT, ["not valid", "'median'", "'final', 'input'"]),
    ("lens-top_k-zero", lambda m: li.logit_lens(m, PROMPT, top_k=0, **Q), OPT, ["top_k must be an integer", "got 0", rf"1\.\.{D_VOCAB}"]),
    (
        "lens-top_k-beyond-vocab",
        lambda m: li.logit_lens(m, PROMPT, top_k=D_VOCAB + 1, **Q),
        OPT,
        ["top_k must be an integer", f"got {D_VOCAB + 1}", rf"1\.\.{D_VOCAB}"],
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
        ["not valid", "'ln3'", "'ln1', 'ln2', 'ln1_post', 'ln2_post', 'final', 'all'"],
    ),
    ("ablation-not-a-spec", lambda m: _enter(m, "zero"), OPT, ["Not an ablation spec", "'zero'", "RemoveResidual, ZeroComponent"]),
    ("ablation-no-spec", lambda m: _enter(m), OPT, ["no ablation spec", "Got no", r"RemoveResidual\(0"]),
    (
        "walk-negative-steps",
        lambda m: li.orthogonal_walk(m, PROMPT, target=T, steps=-1, **Q),
        OPT,
        ["must be a positive int", "-1", "positive int"],
    ),
    ("faithfulness-zero-steps", lambda m: _faithfulness(m, steps=0), OPT, ["steps must be", "got 0", "positive integer or None"]),
    ("faithfulness-seed-none", lambda m: _faithfulness(m, seed=None), OPT, ["not valid", "seed=None", "an integer"]),
]


# ----- every option: a wrong type, an out-of-range value, NaN/inf for numbers ---------------
# One shared validator (lens_inversion/validation.py) words these messages, so each kind of
# bad value is asserted with the same three parts. `_ENTRY` calls each public function with
# cheap settings; the tables below name, per entry point, its options of each kind.
NAN, INF = float("nan"), float("inf")
ATTRIBUTION = li.attribute  # keep a name for the callable-target cases
_ENTRY = {
    "lens": lambda m, **o: li.logit_lens(m, PROMPT, **{**Q, **o}),
    "attr": lambda m, **o: li.attribute(m, PROMPT, **{**Q, **o}),
    "occl": lambda m, **o: li.attribute(m, PROMPT, **{"method": "occlusion", **Q, **o}),
    "faith": lambda m, **o: _faithfulness(m, **o),
    "grad": lambda m, **o: _invert(m, **o),
    "direct": lambda m, **o: _invert(m, **{"method": "direct", **o}),
    "exact": lambda m, **o: _exact(m, **o),
    "decode": lambda m, **o: li.decode_embeddings(m, torch.randn(1, 3, D_MODEL), **o),
    "viz": lambda m, **o: li.visualize_feature(m, **{"target": f"{T}[:, -1, 0]", "n_tokens": 1, "steps": 2, **Q, **o}),
    "owalk": lambda m, **o: li.orthogonal_walk(m, PROMPT, **{"target": T, "steps": 2, **Q, **o}),
    "cwalk": lambda m, **o: li.clamped_walk(m, PROMPT, **{"target": T, "steps": 2, "inner_steps": 2, **Q, **o}),
    "sweep": lambda m, **o: _sweep(m, **o),
    "band": lambda m, **o: li.bandwidth(m, PROMPT, **{"target": T, "invert": "no", **Q, **o}),
    "report": lambda m, **o: li.report(m, PROMPT, **{"path": "unused-report.html", **Q, **o}),
    "load": lambda m, **o: li.load_model("tiny", **o),
}
_BOOLS = {
    "lens": ["progress", "strict"],
    "attr": ["signed", "include_bos", "per_output", "progress", "strict"],
    "faith": ["progress", "strict"],
    "grad": ["stop_when_closer", "sequential", "include_bos", "progress", "strict"],
    "exact": ["progress", "strict"],
    "decode": ["subtract_positions", "strict"],
    "viz": ["prepend_bos", "progress", "strict"],
    "owalk": ["include_bos", "progress", "strict"],
    "cwalk": ["include_bos", "progress", "strict"],
    "sweep": ["progress", "strict"],
    "band": ["progress", "strict"],
    "report": ["gradient_early_stop", "progress", "strict"],
    "load": ["compatibility_mode", "load_in_8bit", "load_in_4bit"],
}
_OPTIONAL_BOOLS = {"exact": ["exhaustive"], "viz": ["scan"]}
# (entry, option, lowest valid value or None): a float is a wrong type, and low - 1 is out of range
_INTS = {
    "lens": [("chunk_size", 1), ("top_k", 1)],
    "occl": [("window", 1), ("batch_size", 1)],
    "faith": [("steps", 1), ("n_random", 1), ("batch_size", 1)],
    "grad": [("steps", 1), ("top_k", 1), ("n_restarts", 1), ("n_pos", 1)],
    "exact": [("beam", 1), ("hidden_top", 1), ("batch_size", 1), ("n_pos", 1)],
    "decode": [("top_k", 1)],
    "viz": [("n_tokens", 1), ("steps", 1), ("top_k", 1), ("n_restarts", 1), ("batch_size", 1)],
    "owalk": [("steps", 1)],
    "cwalk": [("steps", 1), ("inner_steps", 1)],
    "sweep": [("batch_size", 1)],
    "report": [("gradient_steps", 1)],
}
_INT_MESSAGE = {  # the options whose range message differs from "a positive integer"
    ("occl", "window"): "window must be a positive integer",
}
_SEEDS = {"grad": True, "exact": True, "viz": True, "owalk": True, "cwalk": True, "faith": False, "sweep": False, "report": False}
# (entry, option, a finite value out of range or None, what the message names as valid)
_FLOATS = {
    "grad": [
        ("lr", -1.0, r"> 0 or None"), ("lr_end_factor", 1.5, r"in \(0, 1\]"), ("momentum", 1.0, r"in \[0, 1\)"),
        ("noise_std", -1.0, ">= 0"), ("shift_std", -1.0, ">= 0"), ("noise_mean", None, "finite number"),
        ("noise_weight", None, "finite number"), ("target_weight", None, "finite number"),
    ],
    "combined": [("alpha", -1.0, ">= 0"), ("beta", -1.0, ">= 0")],
    "exact": [("tolerance", 1.0, r"in \[0, 1\)")],
    "viz": [("c", None, "finite number"), ("lr", 0.0, r"> 0 or None")],
    "owalk": [("step_size", 0.0, "> 0")],
    "cwalk": [("step_size", -0.1, "> 0"), ("lr", 0.0, "> 0")],
    "band": [("kl_threshold", -0.01, ">= 0")],
}
_ENTRY["combined"] = lambda m, **o: _invert(m, **{"loss": "combined", **o})
_CHOICES = {  # (entry, option): a string outside the choices, and a value of the wrong type
    ("lens", "compare"): "'final', 'input'", ("lens", "rows"): "'blocks', 'sublayers'",
    ("attr", "method"): "'grad_x_input', 'occlusion', 'combined'", ("attr", "normalize"): "'max_abs', 'none'",
    ("attr", "reuse"): "'auto', 'cache', 'recompute'", ("occl", "metric"): "'l1', 'kl'",
    ("grad", "optimizer"): "'sgd', 'adam'", ("grad", "start"): "'noise', 'mixed'", ("grad", "decoding"): "'pinv', 'cosine'",
    ("exact", "order"): "'gradient', 'random', 'vocab'", ("exact", "reuse"): "'auto', 'cache', 'recompute'",
    ("decode", "decoding"): "'pinv', 'cosine', 'l2'", ("viz", "objective"): "'constant', 'mean'",
    ("viz", "method"): "'embedding', 'direct'", ("viz", "optimizer"): "'sgd', 'adam'",
    ("owalk", "dtype"): "'float32', 'float64'", ("cwalk", "dtype"): "'float32', 'float64'",
    ("sweep", "ablation"): "'zero', 'mean'", ("band", "invert"): "'auto', 'yes', 'no'",
    ("report", "ablation"): "'zero', 'mean', 'resample'",
}


def _options_cases():
    cases = []
    for entry, names in _BOOLS.items():
        for name in names:
            valid = "must be True or False" if entry == "attr" and name != "strict" else "True, False"
            if name == "strict":
                valid = "True or False"
            cases.append((f"{entry}-{name}-truthy-string", entry, {name: "no"}, OPT, ["True|not valid", "'no'", valid]))
            cases.append((f"{entry}-{name}-one", entry, {name: 1}, OPT, ["True|not valid", "1", valid]))
    for entry, names in _OPTIONAL_BOOLS.items():
        for name in names:
            cases.append((f"{entry}-{name}-truthy-string", entry, {name: "yes"}, OPT, ["not valid", f"{name}='yes'", "True, False, None"]))
    for entry, items in _INTS.items():
        for name, low in items:
            error = OPT
            wrong = _INT_MESSAGE.get((entry, name), f"{name} must be")
            cases.append((f"{entry}-{name}-a-float", entry, {name: 2.5}, error, [wrong, "2.5", "integer"]))
            cases.append((f"{entry}-{name}-below-range", entry, {name: low - 1}, error, [wrong, str(low - 1), r"positive integer|1\.\."]))
            cases.append((f"{entry}-{name}-a-bool", entry, {name: True}, error, [wrong, "True", "integer"]))
    for entry, optional in _SEEDS.items():
        valid = r"an integer in \[0, 2\*\*63 - 1\]" + (" or None" if optional else "")
        for value, shown in ((1.5, "1.5"), (2**70, str(2**70)), (-1, "-1"), ("7", "'7'")):
            cases.append((f"{entry}-seed-{shown.strip(chr(39))}", entry, {"seed": value}, OPT, ["not valid", f"seed={shown}", valid]))
    for entry, items in _FLOATS.items():
        for name, outside, valid in items:
            for value, shown in ((NAN, "nan"), (INF, "inf"), (-INF, "-inf"), ("x", "'x'"), (True, "True")):
                cases.append((f"{entry}-{name}-{shown.strip(chr(39))}", entry, {name: value}, OPT,
                              [f"{name} must be a finite number", f"got {shown}", valid]))
            if outside is not None:
                cases.append((f"{entry}-{name}-out-of-range", entry, {name: outside}, OPT,
                              [f"{name} must be a finite number", f"got {outside}", valid]))
    for (entry, name), valid in _CHOICES.items():
        cases.append((f"{entry}-{name}-unknown", entry, {name: "nope"}, OPT, ["not valid", f"{name}='nope'", valid]))
        cases.append((f"{entry}-{name}-wrong-type", entry, {name: 3}, OPT, ["not valid", f"{name}=3", valid]))
    return [(cid, (lambda m, e=entry, o=opts: _ENTRY[e](m, **o)), err, parts) for cid, entry, opts, err, parts in cases]


def _reenter(model):
    context = li.ablated(model, li.RemoveResidual(0))
    with context, torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    with context:
        pass


def _nested(model):
    context = li.ablated(model, li.RemoveResidual(0))
    with context, context:
        pass


def _raises(*_):
    raise ZeroDivisionError("boom")


PATH_CASES = [
    # ----- file destinations, checked before anything runs ------------------------------------
    ("report-path-a-directory", lambda m: li.report(m, PROMPT, path=tempfile.gettempdir(), **Q), OPT,
     ["is a directory", f"path='{re.escape(tempfile.gettempdir())}'", "give a file path inside it"]),
    ("report-path-missing-folder", lambda m: li.report(m, PROMPT, path="/no/such/folder/r.html", **Q), OPT,
     ["does not exist", "path='/no/such/folder/r.html'", "existing, writable folder"]),
    ("report-path-unwritable", lambda m: li.report(m, PROMPT, path="/proc/lens-inversion.html", **Q), OPT,
     ["Cannot write to", "path='/proc/lens-inversion.html'", "existing folder you may write to|existing, writable"]),
    ("report-path-not-a-path", lambda m: li.report(m, PROMPT, path=42, **Q), OPT,
     ["must be a file path", "int 42", r"str or pathlib\.Path"]),
    ("report-title-not-text", lambda m: li.report(m, PROMPT, path="unused.html", title=42, **Q), OPT,
     ["title must be", "int 42", "a string or None"]),
    ("lens-to_html-a-directory", lambda m: li.logit_lens(m, PROMPT, **Q).to_html(tempfile.gettempdir()), OPT,
     ["is a directory", "path=", "give a file path inside it"]),
    ("attribution-to_html-missing-folder", lambda m: li.attribute(m, PROMPT, **Q).to_html("/no/such/folder/a.html"), OPT,
     ["does not exist", "'/no/such/folder/a.html'", "existing, writable folder"]),
    ("sweep-to_html-unwritable", lambda m: _sweep(m, layers=[0]).to_html("/proc/lens-inversion.html"), OPT,
     ["Cannot write to", "'/proc/lens-inversion.html'", "folder"]),
    ("faithfulness-to_html-a-directory", lambda m: _faithfulness(m, steps=2).to_html(tempfile.gettempdir()), OPT,
     ["is a directory", "path=", "give a file path inside it"]),
    ("bandwidth-to_html-empty-path", lambda m: li.bandwidth(m, PROMPT, target=T, widths=[64], invert="no", **Q).to_html(""),
     OPT, ["must be a file path", "str ''", "such as 'out.html'"]),
    # ----- callables that raise or return the wrong shape --------------------------------------
    ("loss-callable-raises", lambda m: _invert(m, loss=_raises), OPT,
     ["loss callable raised ZeroDivisionError", "boom", r"one value per sample, shape \(1,\)"]),
    ("loss-callable-wrong-shape", lambda m: _invert(m, n_restarts=2, loss=lambda o, t: (o - t).abs().sum()), OPT,
     ["must return one value per sample", r"got shape \(\)", r"shape \(2,\)"]),
    ("loss-callable-not-a-tensor", lambda m: _invert(m, loss=lambda o, t: 1.0), OPT,
     ["must return a tensor", "got float", "one value per sample"]),
    ("sweep-metric-callable-raises", lambda m: _sweep(m, layers=[0], metric=_raises), OPT,
     ["metric callable raised ZeroDivisionError", "boom", r"one value per row, shape \(\d+,\)"]),
    ("target-callable-raises", with_old_spelling(lambda m: ATTRIBUTION(m, PROMPT, target=_raises, **Q)), OPT,
     ["target callable raised ZeroDivisionError", "boom", r"\[batch\] or \[batch, k\]"]),
    ("target-callable-returns-logits", with_old_spelling(lambda m: ATTRIBUTION(m, PROMPT, target=lambda logits: logits, **Q)), OPT,
     ["must return", rf"got shape \(1, \d+, {D_VOCAB}\)", r"\[batch\] or \[batch, k\]"]),
    # ----- context managers entered twice ------------------------------------------------------
    ("ablated-entered-again", _reenter, li.errors.ReusedContextError,
     ["already entered", r"it is ended", r"single-use.*li\.ablated\(model, \*specs\)"]),
    ("ablated-nested-in-itself", _nested, li.errors.ReusedContextError,
     ["already entered", r"it is active", r"single-use.*li\.ablated\(model, \*specs\)"]),
    # ----- the raw errors of the second reliability round ---------------------------------------
    ("prompt-lone-surrogate", lambda m: li.logit_lens(m, "a\ud800b", **Q), P,
     ["lone surrogate", r"'a\\ud800b'", "valid Unicode"]),
    ("prompt-lone-surrogate-in-batch", lambda m: li.attribute(m, ["fine", "a\ud800b"], **Q), P,
     ["Prompt 1 of the batch", "lone surrogate", "give valid text"]),
    ("batch-entry-too-long", lambda m: li.logit_lens(m, ["A cat", "blue " * 40], **Q), P,
     ["Prompt 1 of the batch of 2", r"has \d+ tokens", rf"n_ctx\) is {N_CTX}.*at most {N_CTX} tokens"]),
    ("invert-target-none", lambda m: li.invert(m, PROMPT, target=None, **Q), T_,
     ["target must be a Target", "got NoneType None", "blocks.0.hook_resid_post"]),
    ("exact-target-a-number", lambda m: _exact(m, target=3.5), T_,
     ["target must be a Target", "got float 3.5", "or a list of them"]),
    ("activation-batch-of-zero", lambda m: _invert(m, _activation(m)[:0]), P,
     ["empty batch", r"shape \(0, \d+, 64\)", r"batch >= 1"]),
    ("exact-activation-batch-of-zero", lambda m: _exact(m, _activation(m)[:0]), P,
     ["empty batch", r"shape \(0, \d+, 64\)", r"batch >= 1"]),
    ("decode-subtract-positions-past-n_ctx", lambda m: li.decode_embeddings(m, torch.randn(1, N_CTX + 3, D_MODEL),
                                                                          subtract_positions=True), OPT,
     [f"at most n_ctx={N_CTX} positions", f"{N_CTX + 3} positions", "subtract_positions=False"]),
    ("attribute-target-hook-short-form", lambda m: li.attribute(m, PROMPT, target="resid_post.1", **Q), T_,
     ["neither a next-token id", "target='resid_post.1'", r"write 'blocks\.1\.hook_resid_post'.*li\.invert"]),
    ("attribute-target-multi-token-string", with_old_spelling(lambda m: li.attribute(m, PROMPT, target=" sky is blue", **Q)), T_,
     ["not a next-token target", "' sky is blue'", "single-token string, a callable on the logits"]),
    ("ablate-float-seed", lambda m: li.Ablate(T, mode="resample", reference=PROMPT, seed=1.5), OPT,
     ["not valid", "seed=1.5", r"integer in \[0, 2\*\*63 - 1\]"]),
    ("ablate-reference-a-number", lambda m: li.Ablate(T, mode="mean", reference=3), OPT,
     ["reference must be", "int 3", "prompt string, a list of prompt strings or a tensor"]),
    ("truncate-width-negative-keep", lambda m: li.TruncateWidth("resid_post", keep=-1), OPT,
     ["keep must be", "got -1", "integer >= 0"]),
    ("truncate-width-float-keep", lambda m: li.TruncateWidth("resid_post", keep=2.5), OPT,
     ["keep must be", "got 2.5", "integer >= 0"]),
    ("walk-two-targets", lambda m: li.orthogonal_walk(m, PROMPT, target=[T, "blocks.1.hook_resid_post"], steps=2, **Q), T_,
     ["holds one target", "got 2", "give one"]),
    ("walk-clamp-a-float", lambda m: li.clamped_walk(m, PROMPT, target=T, steps=2, clamp=1.5, **Q), OPT,
     ["clamp must be position", "1.5", r"-\d+\.\.\d+"]),
    ("viz-n_tokens-past-context", lambda m: li.visualize_feature(m, target=f"{T}[:, -1, 0]", n_tokens=N_CTX + 5, **Q), OPT,
     ["n_tokens must be", f"got {N_CTX + 5}", rf"1\.\.{N_CTX - 1}"]),
    ("lens-layers-a-float", lambda m: li.logit_lens(m, PROMPT, layers=1.5, **Q), T_,
     ["not an integer layer", "1.5", rf"0\.\.{N_LAYERS - 1}"]),
    ("lens-positions-a-float", lambda m: li.logit_lens(m, PROMPT, positions=1.5, **Q), OPT,
     ["positions must be", "1.5", "an int, a slice or a list of ints"]),
    ("sweep-layers-a-float", lambda m: _sweep(m, layers=1.5), OPT, ["layers must be", "float 1.5", "a list of ints"]),
    ("sweep-widths-not-a-list", lambda m: _sweep(m, ablation="truncate", widths=8), OPT,
     ["widths must be a non-empty list", "got 8", rf"\[0, {D_MODEL}\]"]),
    ("attribute-weights-strings", lambda m: li.attribute(m, PROMPT, method="combined", weights=("1", "1"), **Q), OPT,
     ["weights must be two numbers", r"\('1', '1'\)", "grad_x_input, occlusion"]),
    ("attribute-baseline-a-list", lambda m: li.attribute(m, PROMPT, method="occlusion", baseline=[1], **Q), OPT,
     ["not valid", r"baseline=\[1\]", "'pad'.*or a token id"]),
    ("report-inversion-layers-a-float", lambda m: li.report(m, PROMPT, path="unused.html", inversion_layers=1.5, **Q), T_,
     ["not an integer layer|integer", "1.5", rf"0\.\.{N_LAYERS - 1}"]),
]

FEATURE_CASES = [
    ("sweep-features-a-string", with_old_spelling(lambda m: _sweep(m, layers=[0], features="x")), T_,
     ["feature must be", "'x'", "an int or a slice"]),
    ("sweep-features-a-float", with_old_spelling(lambda m: _sweep(m, layers=[0], features=2.5)), T_,
     ["feature must be", "2.5", "an int or a slice"]),
    ("sweep-features-zero-step", with_old_spelling(lambda m: _sweep(m, layers=[0], features=slice(0, 8, 0))), T_,
     ["feature slice", "step", "cannot be zero"]),
]
CASES += _options_cases() + PATH_CASES + FEATURE_CASES


# GPT-2-like on every backend; on TransformerLens 3.x (the backend_generic lane) HookedTransformer too.
MODELS = ["gpt2-native", *(["gpt2-hooked"] if has_hooked_transformer() else [])]


@pytest.fixture(scope="module", params=MODELS)
def gpt2(request):
    return build(request.param)


def test_there_are_at_least_400_cases():
    assert len(CASES) >= 400
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


@pytest.mark.parametrize(
    ("objective", "message"),
    [("x", "objective must be a callable on the logits; got str"), (3, "got int"),
     (lambda logits: logits.sum(), r"must return \[batch\] or \[batch, k\] float values")],
)
def test_attribute_objective_must_be_a_callable_of_the_logits(gpt2, objective, message):
    with pytest.raises(li.OptionError, match=message):
        li.attribute(gpt2, PROMPT, objective=objective, progress=False)


def test_integer_like_positions_are_still_accepted(gpt2):
    """The stricter index check keeps NumPy and 0-d tensor integers working."""
    import numpy as np

    with pytest.deprecated_call():  # positions= is the old spelling of target='resid_post[:, 2:4]'
        plain = li.ablation_sweep(gpt2, PROMPT, positions=[2, 3], layers=[0], **Q)
        other = li.ablation_sweep(gpt2, PROMPT, positions=[np.int64(2), torch.tensor(3)], layers=0, **Q)
    assert torch.equal(plain.values, other.values)


@pytest.mark.parametrize("options", [dict(path=tempfile.gettempdir()), dict(path="/no/such/folder/r.html"), dict(title=42)])
def test_report_checks_path_and_title_before_any_analysis(gpt2, monkeypatch, options):
    from importlib import import_module

    report_module = import_module("lens_inversion.report")  # the module, not li.report the function

    def not_reached(*args, **kwargs):
        raise AssertionError("report() ran an analysis before checking its path and title")

    monkeypatch.setattr(report_module, "logit_lens", not_reached)
    with pytest.raises(li.OptionError):
        li.report(gpt2, PROMPT, **{"path": "unused.html", **Q, **options})


def test_half_precision_activations_are_converted_without_a_warning(gpt2):
    """The documented rule: activations of any float dtype are converted to float32, silently."""
    import warnings

    act = _activation(gpt2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        half = _invert(gpt2, act.half(), seed=0)
    full = _invert(gpt2, act.half().float(), seed=0)
    assert torch.equal(half.tokens, full.tokens) and half.distance == full.distance


# Options whose wrong values are cases of their own above (targets, prompts, callables,
# paths, token lists, caches) rather than rows of the per-type tables.
_COVERED_BY_OWN_CASES = {
    "target", "targets", "loss", "metric", "layers", "positions", "allowed_tokens", "cache", "path", "title",
    "reference", "clamp", "widths", "weights", "baseline", "site", "ablation", "inversion_layers", "readout",
    "answer", "foil", "embedding_from", "dtype", "device", "device_map", "attribution", "lens", "lenses",
    "objective",  # attribute: test_attribute_objective_must_be_a_callable_of_the_logits; viz: _CHOICES
}
_FUNCTIONS = {"lens": "logit_lens", "attr": "attribute", "faith": "faithfulness", "decode": "decode_embeddings",
              "viz": "visualize_feature", "owalk": "orthogonal_walk", "cwalk": "clamped_walk",
              "sweep": "ablation_sweep", "band": "bandwidth", "report": "report", "load": "load_model"}


def _table_options() -> dict[str, set[str]]:
    covered: dict[str, set[str]] = {}
    for table in (_BOOLS, _OPTIONAL_BOOLS):
        for entry, names in table.items():
            covered.setdefault(entry, set()).update(names)
    for table in (_INTS, _FLOATS):
        for entry, items in table.items():
            covered.setdefault(entry, set()).update(item[0] for item in items)
    for entry, name in _CHOICES:
        covered.setdefault(entry, set()).add(name)
    for entry in _SEEDS:
        covered.setdefault(entry, set()).add("seed")
    return covered


def test_every_keyword_option_of_every_public_function_has_bad_value_cases():
    """A new option cannot slip in without wrong-type / out-of-range / NaN cases in the tables above."""
    import inspect

    from lens_inversion.inversion.exact import invert_exact
    from lens_inversion.inversion.gradient import invert_gradient

    covered = _table_options()
    functions = {entry: getattr(li, name) for entry, name in _FUNCTIONS.items()}
    functions.update(grad=invert_gradient, exact=invert_exact)
    covered["grad"] = covered.get("grad", set()) | covered.get("combined", set()) | {"method"}  # method: its own case
    covered["sweep"] = covered.get("sweep", set()) | {"features"}  # FEATURE_CASES
    missing = {}
    for entry, fn in functions.items():
        options = {n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}
        gap = options - covered.get(entry, set()) - covered.get("occl" if entry == "attr" else entry, set())
        gap -= _COVERED_BY_OWN_CASES
        if gap:
            missing[entry] = sorted(gap)
    assert missing == {}, f"options without bad-value cases: {missing}"
