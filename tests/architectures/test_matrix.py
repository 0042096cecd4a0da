"""The support matrix: every decoder-only architecture the installed TransformerLens bridge can boot
(and, on TransformerLens 3.x, HookedTransformer configs: hooked.py) × raw and compatibility mode
× every capability, each checked against an independent reference.

Run it with `HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -m architectures tests/architectures -n 2`
(TransformerLens 4; the 3.9 lane runs the same command in its own environment).
One test per (architecture, mode) runs every capability (one boot each); it fails on any
"fails", "wrong" or "unchecked" cell, and on a "refused" cell whose reason is not listed in
EXPECTED_REFUSALS below (or, for one TransformerLens lane only, in LANE_REFUSALS). An expected
refusal that no longer happens also fails, so the table is kept honest (and a test flips when
upstream fixes a bug).

The architecture list is the installed bridge's own (`catalog.architectures()`): one that a
lane's TransformerLens does not support is not in that lane's matrix, and docs/models.md
lists it as "not in this TransformerLens" beside the lanes that have it.
"""

import json
import time
from pathlib import Path

import catalog
import checks
import hooked
import pytest

pytestmark = pytest.mark.architectures

MODES = ("raw", "compat")

PARALLEL = ("CohereForCausalLM", "Cohere2ForCausalLM", "FalconForCausalLM", "GPTJForCausalLM", "GPTNeoXForCausalLM",
            "PhiForCausalLM", "HookedTransformer-gptj", "HookedTransformer-neox")

# (architecture or "*", mode or "*", capability or "*") -> (substring of the refusal's detail, why it is legitimate).
# Entries naming one architecture must still match (else the test says the refusal is gone).
EXPECTED_REFUSALS: dict[tuple[str, str, str], tuple[str, str]] = {
    # --- upstream: TransformerLens / transformers cannot run these (the test flips when fixed)
    ("CodeGenForCausalLM", "*", "*"): (
        "upstream: forward: AttributeError: 'CodeGenAttention' object has no attribute 'embed_positions'",
        "transformers 5.24's CodeGen attention lost `embed_positions`, which TransformerLens's adapter reads"),
    ("GraniteMoeHybridForCausalLM", "*", "*"): (
        "upstream: forward: RuntimeError: Original component not set for model.rotary_emb",
        "TransformerLens's adapter assumes rotary embeddings; Granite-4.0-H configs use none"),
    ("PhiForCausalLM", "compat", "*"): (
        "upstream: compatibility mode: RuntimeError", "weight processing fails inside TransformerLens"),
    ("FalconH1ForCausalLM", "compat", "*"): (
        "upstream: compatibility mode: RuntimeError", "weight processing fails inside TransformerLens"),
    ("VaultGemmaForCausalLM", "compat", "*"): (
        "upstream: compatibility mode: RuntimeError: VaultGemmaArchitectureAdapter does not support compatibility mode",
        "TransformerLens refuses it by design"),
    ("BitNetForCausalLM", "compat", "boot"): (
        "upstream: bridge output differs from Hugging Face's",
        "compatibility mode's weight folding changes BitNet's output (the other checks compare with the bridge)"),
    # --- meaningless for the architecture (the "right" refusals)
    # Parallel attention + MLP: no point between them (no resid_mid), no skip around one of them.
    **{(arch, "*", "lens_sublayers"): ("has no hook point 'blocks.0.hook_resid_mid'",
                                       "parallel attention and MLP: no residual point between them")
       for arch in PARALLEL},
    ("*", "*", "remove_residual_attn"): ("this model runs attention and MLP in parallel", "parallel block"),
    ("*", "*", "remove_residual_mlp"): ("this model runs attention and MLP in parallel", "parallel block"),
    # Pure state-space / recurrent blocks: no attention, no MLP, no point between them.
    **{(arch, "*", cap): ("has no hook point", "a state-space block has no attention or MLP sub-layer")
       for arch in ("MambaForCausalLM", "Mamba2ForCausalLM", "FalconMambaForCausalLM")
       for cap in ("lens_sublayers", "zero_attn", "zero_mlp", "remove_residual_attn", "remove_residual_mlp")},
    # Hybrids whose bridge wraps each mixer block whole: no attention / MLP output hook and no
    # point between them in any block (their mixers differ per layer).
    **{(arch, "*", cap): ("has no hook point", "the bridge exposes no sub-layer of these hybrid blocks")
       for arch in ("NemotronHForCausalLM", "RecurrentGemmaForCausalLM", "Zamba2ForCausalLM")
       for cap in ("lens_sublayers", "zero_attn", "zero_mlp", "remove_residual_attn", "remove_residual_mlp")},
    # No single residual stream per block: HRM-Text's two block stacks, DeepSeek-V4's hyper-connections.
    ("HrmTextForCausalLM", "*", "*"): ("has no `blocks` stack", "two recurrent block stacks (H and L), no `blocks`"),
    ("DeepseekV4ForCausalLM", "*", "*"): ("expose no single residual stream", "several residual streams per block"),
    **{("RwkvForCausalLM", "*", cap): ("has no hook point", "an RWKV block has no attention or MLP output hook")
       for cap in ("zero_attn", "zero_mlp")},
    # A readout head split across bridge components (BERT's dense / activation / LayerNorm):
    # the lens cannot compose it in the model's order (TransformerLens's logit_readout refuses too).
    **{("*", "*", cap): ("The logit lens cannot read this model", "the readout head is split across components")
       for cap in ("lens_final", "lens_input", "lens_sublayers")},
    # Positions / token types mixed in before the embedding hook (BERT): no per-token embedding table.
    **{("*", "*", cap): ("mixes positions (or token types) into its embedding", "no per-token embedding table")
       for cap in ("exact_first", "exact_last", "inv_embedding", "inv_direct")},
    # HookedTransformer configs (TransformerLens 3.x lane): attention-only blocks have no MLP
    # and no point between sub-layers; a model without norms has nothing to bypass or freeze.
    ("HookedTransformer-attn-only", "*", "lens_sublayers"): (
        "has no hook point 'blocks.0.hook_resid_mid'", "attention-only: no MLP, no residual point between sub-layers"),
    **{("HookedTransformer-attn-only", "*", cap): ("this model is attention-only", "no MLP to zero or remove the skip around")
       for cap in ("zero_mlp", "remove_residual_mlp")},
    **{("HookedTransformer-no-norm", "*", cap): ("This model has no", "normalization_type=None: no norms at all")
       for cap in ("bypass_layernorm", "bypass_final_norm", "freeze_layernorm")},
    ("OpenAIGPTLMHeadModel", "*", "bypass_final_norm"): (
        "This model has no ln_final to bypass", "OpenAI GPT has no final norm"),
}


# Refusals of one TransformerLens lane only ("tl3": TransformerLens 3.9's bridge; its
# HookedTransformer configs are in EXPECTED_REFUSALS, since no other lane has them).
LANE_REFUSALS: dict[str, dict[tuple[str, str, str], tuple[str, str]]] = {
    "tl3": {
        **{(arch, "*", "*"): (
            "object has no attribute 'causal_conv1d_fn'",
            "upstream: TransformerLens 3.9's bridge cannot run the gated-delta-net layers of transformers 5.24")
           for arch in ("Qwen3NextForCausalLM", "Qwen3_5ForCausalLM", "Qwen3_5MoeForCausalLM")},
        ("Ernie4_5_MoeForCausalLM", "compat", "*"): (
            "upstream: compatibility mode: AssertionError: MLP W_in not found",
            "TransformerLens 3.9's weight processing cannot find the MoE block's MLP weights"),
        # TransformerLens 3.9's OLMo-Hybrid bridge wraps each block whole: attention and MLP
        # outputs are hooked, the residual point between them is not.
        **{("OlmoHybridForCausalLM", "*", cap): (
            "has no hook point 'blocks.0.hook_resid_mid'",
            "TransformerLens 3.9's bridge exposes no residual point between OLMo-Hybrid's mixer and MLP")
           for cap in ("lens_sublayers", "remove_residual_attn", "remove_residual_mlp")},
    },
}


def _lane() -> str:
    from importlib.metadata import version

    return "tl" + version("transformer-lens").split(".")[0]


EXPECTED = {**EXPECTED_REFUSALS, **LANE_REFUSALS.get(_lane(), {})}


def _expected(arch: str, mode: str, cap: str, detail: str):
    for (a, m, c), (needle, _why) in EXPECTED.items():
        if a in ("*", arch) and m in ("*", mode) and c in ("*", cap) and needle in detail:
            return (a, m, c)
    return None


def _stale(arch: str, mode: str, cells: dict) -> list[str]:
    """Specific expected refusals that did not happen."""
    out = []
    for (a, m, c), (needle, _why) in EXPECTED.items():
        if a != arch or m not in ("*", mode):
            continue
        if cells["boot"]["outcome"] != "works" and c not in ("*", "boot"):
            continue  # the whole row is refused at boot; this capability never ran
        caps = [c] if c != "*" else list(cells)
        if not any(cells[k]["outcome"] == "refused" and needle in cells[k]["detail"] for k in caps if k in cells):
            out.append(f"{a}/{m}/{c}: expected a refusal containing {needle!r}, got "
                       f"{ {k: cells[k]['outcome'] for k in caps if k in cells} }")
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", catalog.architectures() + hooked.architectures())
def test_architecture(arch, mode, matrix_rows_dir):
    t0 = time.perf_counter()
    cells = checks.run_matrix_row(arch, mode)
    problems = verdict(arch, mode, cells)
    row = {"arch": arch, "mode": mode, "cells": cells, "seconds": round(time.perf_counter() - t0, 2),
           "passed": not problems, "problems": problems}
    matrix_rows_dir.mkdir(parents=True, exist_ok=True)
    (matrix_rows_dir / f"{arch}-{mode}.json").write_text(json.dumps(row))
    assert not problems, f"{arch} ({mode}):\n  " + "\n  ".join(problems)


# Cells that still fail, recorded by `record_known_failures.py` from a full run: open work of
# the support-matrix issue, listed in docs/models.md. A known cell that starts to work fails
# the test too (remove it from the file), so the list only shrinks.
KNOWN_FAILURES: dict[str, str] = json.loads((Path(__file__).with_name("known_failures.json")).read_text())


def verdict(arch: str, mode: str, cells: dict) -> list[str]:
    """Why this row fails: bad cells, unexpected refusals, expected refusals that are gone."""
    problems = []
    for cap, c in cells.items():
        known = f"{arch}/{mode}/{cap}" in KNOWN_FAILURES
        if c["outcome"] == "works":
            if known:
                problems.append(f"{cap}: works now: remove {arch}/{mode}/{cap} from known_failures.json")
            continue
        if c["outcome"] == "refused" and _expected(arch, mode, cap, c["detail"]):
            continue
        if not known:
            problems.append(f"{cap}: {c['outcome']}: {c['detail']}")
    problems += _stale(arch, mode, cells)
    return problems
