"""Every decoder-only architecture TransformerLens 4's bridge supports, as a tiny offline model.

`architectures()` lists the keys of TransformerLens's `SUPPORTED_ARCHITECTURES` that are
causal LMs (`...ForCausalLM` / `...LMHeadModel`) and that the installed `transformers`
ships. `model_dir(arch)` builds (once, cached on disk under a key of every relevant
version) a random-weight model of that architecture: 2 layers, hidden size 64, the
project's byte-level BPE test tokenizer, BOS/EOS/pad ids set on the config (pad != BOS),
and the output head scaled ×60 so that output transforms (soft-capping, logit scales)
matter. Building is deterministic (seed 0). Nothing is downloaded.

A build that fails raises `BuildError` carrying the exact upstream exception text; the
matrix records it as "refused: upstream" for every capability of that architecture.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import traceback
from pathlib import Path

# Classes in SUPPORTED_ARCHITECTURES whose names end like a causal LM but that are not one
# (none today; BertLMHeadModel is booted as a causal decoder with is_decoder=True).
NOT_CAUSAL: dict[str, str] = {}

HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
INTERMEDIATE = 128
EXPERTS = 4
TOP_K = 2
EXPERT_INTERMEDIATE = 32
MAX_POSITIONS = 64
HEAD_SCALE = 60.0  # logits of a random 64-wide model are < 1; transforms only show far from 0
SEED = 0
PROMPT = "The cat sat on the mat"  # every check's prompt
MAX_TOKENS = 8  # BOS included

# Keys set on every config class that has them (read from the default config's to_dict()
# and attribute_map), so that every size is small and consistent.
GENERIC = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "intermediate_size": INTERMEDIATE,
    "ffn_hidden_size": INTERMEDIATE,
    "ffn_dim": INTERMEDIATE,
    "n_inner": INTERMEDIATE,
    "max_position_embeddings": MAX_POSITIONS,
    "n_positions": MAX_POSITIONS,
    "n_ctx": MAX_POSITIONS,
    "max_seq_len": MAX_POSITIONS,
    "seq_length": MAX_POSITIONS,
    # mixture of experts
    "num_experts": EXPERTS,
    "num_local_experts": EXPERTS,
    "n_routed_experts": EXPERTS,
    "moe_num_experts": EXPERTS,
    "num_experts_per_tok": TOP_K,
    "moe_k": TOP_K,
    "moe_topk": TOP_K,
    "top_k_experts": TOP_K,
    "moe_intermediate_size": EXPERT_INTERMEDIATE,
    "expert_intermediate_size": EXPERT_INTERMEDIATE,
    "shared_expert_intermediate_size": EXPERT_INTERMEDIATE,
    "n_shared_experts": 1,
    "num_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "num_dense_layers": 1,
    "decoder_sparse_step": 1,
    "moe_layer_freq": 1,
    # multi-head latent attention (DeepSeek, GLM-MoE)
    "kv_lora_rank": 16,
    "q_lora_rank": 32,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "qk_head_dim": 16,
    "v_head_dim": 16,
    # sparse-attention indexers and low-rank outputs (GLM-MoE-DSA, DeepSeek-V4)
    "index_n_heads": 4,
    "index_head_dim": 16,
    "index_topk": 64,
    "o_lora_rank": 32,
    "o_groups": 2,
    # Gemma-4's per-layer input embeddings (default 262144 x 256 per layer)
    "hidden_size_per_layer_input": 16,
    # state-space and linear-attention mixers
    "state_size": 16,
    "mamba_d_state": 16,
    "mamba_n_heads": 8,
    "mamba_d_head": 16,
    "mamba_n_groups": 1,
    "mamba_expand": 2,
    "mamba_chunk_size": 16,
    "mamba_head_dim": 16,
    "mamba_num_heads": 8,
    "ssm_state_size": 16,
    "n_groups": 1,
    "chunk_size": 16,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "lru_width": HIDDEN,
}

# Per-architecture overrides, applied after GENERIC. Each says why.
OVERRIDES: dict[str, dict] = {
    # Real multipliers (granite-3.0-2b-base): the config defaults (all 1.0) would hide
    # every scale the bridge must reproduce.
    "GraniteForCausalLM": dict(embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.015625,
                               logits_scaling=8.0),
    "GraniteMoeForCausalLM": dict(embedding_multiplier=12.0, residual_multiplier=0.22,
                                  attention_multiplier=0.015625, logits_scaling=6.0),
    # (its hybrid layer mix: one linear-attention and one full-attention layer)
    "GraniteMoeHybridForCausalLM": dict(embedding_multiplier=12.0, residual_multiplier=0.22,
                                        attention_multiplier=0.015625, logits_scaling=8.0,
                                        layer_types=["linear_attention", "full_attention"]),
    # Falcon-H1-0.5B's real multipliers (defaults of 1.0 hide them).
    "FalconH1ForCausalLM": dict(embedding_multiplier=5.656854, lm_head_multiplier=0.0390625,
                                mamba_d_ssm=128),  # (and its SSM width defaults to 1024: 8 heads of 16 here)
    # Cohere's default logit_scale (0.0625) is already real; Gemma-2's soft-capping
    # defaults (30 / 50) are real. Spelled out so a changed default cannot hide them.
    "CohereForCausalLM": dict(logit_scale=0.0625),
    "Cohere2ForCausalLM": dict(logit_scale=0.0625),
    "Gemma2ForCausalLM": dict(final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    # BERT as a causal decoder: the only way a BertLMHeadModel is a causal LM.
    "BertLMHeadModel": dict(is_decoder=True),
    # Rotary dimension defaults to 64, more than a 16-wide head; partial rotary as in GPT-J.
    "GPTJForCausalLM": dict(rotary_dim=8),
    "CodeGenForCausalLM": dict(rotary_dim=8),
    # One global and one local layer (the default pattern lists 24 layers).
    "GPTNeoForCausalLM": dict(attention_types=[[["global", "local"], 1]]),
    # Mamba-2's head count defaults to 128; expand 2 x 64 = 8 heads of 16.
    "Mamba2ForCausalLM": dict(num_heads=8),
    # Zamba2's shared attention block is 2 x hidden wide: heads of 2 x 64 / 4 = 32.
    "Zamba2ForCausalLM": dict(head_dim=32),
    # Hybrids: one state-space/convolution layer and one attention layer (defaults are
    # None or all-Mamba, and a cache with no attention layer crashes in transformers).
    "Lfm2MoeForCausalLM": dict(layer_types=["conv", "full_attention"]),
    "BambaForCausalLM": dict(attn_layer_indices=[1]),
    "JambaForCausalLM": dict(attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1),
}

# Config keys that hold one entry per layer: keep 2 entries with the distinct kinds of the
# default (so a hybrid keeps one layer of each mixer).
PER_LAYER_LISTS = ("layer_types", "layers_block_type", "block_types", "mlp_layer_types", "indexer_types")


class BuildError(RuntimeError):
    """The architecture could not be built offline; the message is the upstream error."""


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(dist) for name, dist in (("transformers", "transformers"),
                                                   ("transformer_lens", "transformer-lens"),
                                                   ("torch", "torch"), ("tokenizers", "tokenizers"))}


def _source_key() -> str:
    """Changes whenever this file or the fixture tokenizer changes."""
    here = Path(__file__)
    fixture = here.parent.parent / "fixture_models.py"
    digest = hashlib.sha256(here.read_bytes() + fixture.read_bytes()).hexdigest()[:12]
    return digest


def cache_root() -> Path:
    v = _versions()
    key = f"tf{v['transformers']}-tl{v['transformer_lens']}-torch{v['torch']}-{_source_key()}"
    base = Path(os.environ.get("LI_ARCH_CACHE", Path(tempfile.gettempdir()) / "li-arch-cache"))
    return base / key


def architectures() -> list[str]:
    """Decoder-only causal-LM keys of SUPPORTED_ARCHITECTURES that transformers ships, in its order."""
    import transformers
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    out = []
    for name in SUPPORTED_ARCHITECTURES:
        if not (name.endswith("ForCausalLM") or name.endswith("LMHeadModel")) or name in NOT_CAUSAL:
            continue
        try:
            getattr(transformers, name)
        except (AttributeError, ImportError):
            continue  # not shipped by this transformers
        out.append(name)
    return out


def _tokenizer():
    from fixture_models import tokenizer

    return tokenizer()


def prompt_ids(tok) -> list[int]:
    """BOS + the prompt's tokens, at most MAX_TOKENS."""
    return [tok.bos_token_id, *tok.encode(PROMPT, add_special_tokens=False)][:MAX_TOKENS]


def _layer_list(default) -> list:
    """Two entries: one non-attention kind and one attention kind when the default has both
    (a hybrid keeps one layer of each mixer), else the first distinct kinds."""
    kinds = list(dict.fromkeys(default))
    attention = [k for k in kinds if "attention" in str(k) and "linear" not in str(k)]
    others = [k for k in kinds if k not in attention]
    if attention and others:
        return [others[0], attention[0]]
    return (kinds * LAYERS)[:LAYERS]


def make_config(arch: str):
    """The tiny config of `arch` (raises whatever transformers raises)."""
    import transformers

    cls = getattr(transformers, arch).config_class
    default = cls()
    stored = default.to_dict()
    known = set(stored) | set(getattr(cls, "attribute_map", {}) or {})
    tok = _tokenizer()
    kwargs = {k: v for k, v in GENERIC.items() if k in known}
    if "kv_lora_rank" in kwargs and "qk_rope_head_dim" in kwargs and "head_dim" in kwargs:  # latent attention: rope width
        kwargs["head_dim"] = kwargs["qk_rope_head_dim"]
    if "kv_lora_rank" in kwargs and "num_key_value_heads" in kwargs:  # latent attention has no grouped heads
        kwargs["num_key_value_heads"] = HEADS
    for key in PER_LAYER_LISTS:
        value = stored.get(key)  # stored fields only (some are read-only properties)
        if isinstance(value, (list, tuple)) and value:
            kwargs[key] = _layer_list(value)
    if "vocab_size_per_layer_input" in known:
        kwargs["vocab_size_per_layer_input"] = len(tok)
    kwargs.update(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    kwargs.update(OVERRIDES.get(arch, {}))
    config = cls(**kwargs)
    return config


def _build(arch: str, path: Path) -> dict:
    import torch
    import transformers

    tok = _tokenizer()
    torch.manual_seed(SEED)
    config = make_config(arch)
    model = getattr(transformers, arch)(config).eval()
    head = model.get_output_embeddings()
    with torch.no_grad():
        if head is not None and getattr(head, "weight", None) is not None:
            head.weight.mul_(HEAD_SCALE)
        ids = torch.tensor([prompt_ids(tok)])
        out = model(ids)  # the architecture runs a plain forward on this install
        if not torch.isfinite(out.logits).all():
            raise BuildError(f"{arch}: the tiny model's logits are not finite")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    # Hugging Face's own log-probabilities on the prompt: the bridge must reproduce them.
    torch.save({"tokens": ids, "logprobs": torch.log_softmax(out.logits[0].float(), -1)}, path / "hf_logprobs.pt")
    return {"arch": arch, "config": type(config).__name__, "model_type": config.model_type,
            "logit_scale": float(out.logits.abs().max())}


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def model_dir(arch: str) -> Path:
    """The saved tiny model of `arch`, built on first use; raises BuildError (cached too)."""
    root = cache_root()
    final = root / arch
    failed = root / f"{arch}.failed.json"
    with _lock(root / f".{arch}.lock"):
        if (final / "built.json").exists():
            return final
        if failed.exists():
            raise BuildError(json.loads(failed.read_text())["error"])
        work = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=root))
        try:
            info = _build(arch, work)
        except Exception as error:  # noqa: BLE001 - the upstream error is the cell
            shutil.rmtree(work, ignore_errors=True)
            message = f"{type(error).__name__}: {error}"
            failed.write_text(json.dumps({"error": message, "traceback": traceback.format_exc()}))
            raise BuildError(message) from error
        (work / "built.json").write_text(json.dumps(info))
        os.replace(work, final)
    return final


def load(arch: str, **kwargs):
    """The tiny model of `arch` booted with `li.load_model` (its load warnings silenced).

    A model that cannot be built raises BuildError: the catalog builds every architecture
    offline, so a failure here is a bug, never a reason to skip.
    """
    import warnings

    import lens_inversion as li

    path = model_dir(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return li.load_model(str(path), device="cpu", **kwargs)
