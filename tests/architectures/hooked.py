"""HookedTransformer configurations for the matrix on TransformerLens 3.x (no HookedTransformer on 4.x).

Each entry is a tiny random-weight `HookedTransformer(HookedTransformerConfig(...))` (2 layers,
d_model 64, 4 heads of 16, the tests' byte-level BPE tokenizer) that turns on one family of
HookedTransformer's config flags: the norms (LN, LNPre, RMS, RMSPre, none, post-embedding LN,
norms before and after each sub-layer, post-norm blocks), the positions (learned, rotary full / partial /
adjacent pairs, ALiBi, shortformer), the MLP (plain, gated, SoLU, mixture of experts, none),
the attention (grouped-query, local / global, soft-capping, query-key norms, sinks), parallel
attention + MLP, and tied / untied unembedding with output soft-capping.

Two modes, as for the bridge: "raw" is the model as constructed; "compat" is the model after
`process_weights_()` with the flags `HookedTransformer.from_pretrained` would use for it
(fold the norms, centre the writing weights and the unembedding, except where that is not
output-preserving: shortformer, post-norms, output soft-capping), so the checks also run on
a folded model, the way most HookedTransformer users meet it. The unembedding is scaled ×12 so
that output soft-capping matters (HookedTransformer initialises 5× wider than Hugging Face, so
this gives logits of the size the bridge catalog's ×60 head gives: tens).

Nothing is cached on disk: building one takes a fraction of a second.
"""

from __future__ import annotations

PREFIX = "HookedTransformer-"

BASE = dict(d_model=64, d_head=16, n_heads=4, n_layers=2, n_ctx=64, d_mlp=128, act_fn="gelu_new",
            normalization_type="LN", positional_embedding_type="standard", seed=0, device="cpu")
_LLAMA = dict(normalization_type="RMS", final_rms=True, positional_embedding_type="rotary", gated_mlp=True,
              act_fn="silu", n_key_value_heads=2)

# name -> (config overrides; "tied": W_U = W_Eᵀ, what it is an instance of).
CONFIGS: dict[str, tuple[dict, str]] = {
    "gpt2": ({}, "GPT-2: LayerNorm, learned positions, plain GELU MLP, untied head"),
    "gpt2-tied": ({"tied": True}, "GPT-2 with tied unembedding (W_U = W_Eᵀ)"),
    "lnpre": ({"normalization_type": "LNPre"}, "weightless LayerNorm (the norms of a folded model)"),
    "no-norm": ({"normalization_type": None}, "no norms at all (no ln_final)"),
    "scaled-attn": ({"scale_attn_by_inverse_layer_idx": True}, "attention scaled by 1/(layer+1) (Stanford CRFM GPT-2)"),
    "solu": ({"act_fn": "solu_ln"}, "SoLU MLP with a LayerNorm inside it (SoLU models)"),
    "attn-only": ({"attn_only": True}, "attention-only blocks (no MLP)"),
    "llama": (_LLAMA, "Llama / Mistral: RMSNorm, rotary, gated SiLU MLP, grouped-query attention"),
    "rmspre": ({**_LLAMA, "normalization_type": "RMSPre"}, "weightless RMSNorm (a folded Llama's norms)"),
    "qwen3": ({**_LLAMA, "use_qk_norm": True}, "Qwen-3 / OLMo-2 style RMSNorm on queries and keys"),
    "olmo2": ({**_LLAMA, "original_architecture": "Olmo2ForCausalLM"},
              "OLMo-2: post-norm blocks (ln1 / ln2 normalize each sub-layer's output)"),
    "mixtral": ({**_LLAMA, "num_experts": 4, "experts_per_token": 2}, "Mixtral: mixture of 4 experts, top 2"),
    "gpt-oss": ({**_LLAMA, "use_attention_sinks": True}, "gpt-oss style attention sinks (a learned per-head logit)"),
    "gptj": ({"parallel_attn_mlp": True, "positional_embedding_type": "rotary", "rotary_dim": 8,
              "rotary_adjacent_pairs": True}, "GPT-J: parallel attention + MLP, partial rotary on adjacent pairs"),
    "neox": ({"parallel_attn_mlp": True, "positional_embedding_type": "rotary", "rotary_dim": 4},
             "GPT-NeoX / Pythia: parallel attention + MLP, 25% rotary"),
    "gpt-neo": ({"use_local_attn": True, "attn_types": ["global", "local"], "window_size": 4},
                "GPT-Neo: alternating global and local (window 4) attention"),
    "gemma2": ({"normalization_type": "RMS", "positional_embedding_type": "rotary", "gated_mlp": True,
                "act_fn": "gelu_pytorch_tanh", "n_key_value_heads": 2, "use_normalization_before_and_after": True,
                "attn_scores_soft_cap": 50.0, "output_logits_soft_cap": 30.0, "use_local_attn": True,
                "attn_types": ["local", "global"], "window_size": 4, "tied": True},
               "Gemma-2: norms before and after each sub-layer, attention and output soft-capping, "
               "local/global attention, tied head"),
    "bloom": ({"positional_embedding_type": "alibi", "post_embedding_ln": True, "act_fn": "gelu_fast"},
              "Bloom: ALiBi positions, LayerNorm after the embedding"),
    "shortformer": ({"positional_embedding_type": "shortformer"},
                    "shortformer: learned positions added to queries and keys only"),
}

HEAD_SCALE = 12.0


def has_hooked_transformer() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except Exception:  # noqa: BLE001 - TransformerLens 4.x has none
        return False
    return True


def architectures() -> list[str]:
    """The matrix rows of HookedTransformer configs ([] without HookedTransformer)."""
    return [PREFIX + name for name in CONFIGS] if has_hooked_transformer() else []


def is_hooked(arch: str) -> bool:
    return arch.startswith(PREFIX)


def description(arch: str) -> str:
    return CONFIGS[arch.removeprefix(PREFIX)][1]


def make_config(arch: str):
    from fixture_models import tokenizer
    from transformer_lens import HookedTransformerConfig

    overrides = dict(CONFIGS[arch.removeprefix(PREFIX)][0])
    overrides.pop("tied", None)
    kwargs = {**BASE, **overrides, "d_vocab": len(tokenizer())}
    if kwargs.get("attn_only"):
        kwargs.pop("d_mlp")
    return HookedTransformerConfig(**kwargs)


def processing_flags(cfg) -> dict:
    """The flags `HookedTransformer.from_pretrained` would process this config's weights with."""
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    shortformer = cfg.positional_embedding_type == "shortformer"
    post_norm = bool(cfg.use_normalization_before_and_after) or cfg.original_architecture in POST_NORM_ARCHITECTURES
    softcap = (cfg.output_logits_soft_cap or -1) > 0
    return dict(fold_ln=not (shortformer or post_norm), center_writing_weights=not (shortformer or post_norm),
                center_unembed=not (shortformer or softcap))


def build(arch: str, *, processed: bool):
    """(model, reference log-probs of the unprocessed model on `tokens`, tokens).

    The reference lets the boot check compare the processed model with the model it came from.
    """
    import torch
    from catalog import prompt_ids
    from fixture_models import tokenizer
    from transformer_lens import HookedTransformer

    tok = tokenizer()
    cfg = make_config(arch)
    torch.manual_seed(0)
    model = HookedTransformer(cfg, tokenizer=tok).eval()
    with torch.no_grad():
        if CONFIGS[arch.removeprefix(PREFIX)][0].get("tied"):
            model.embed.W_E.mul_(HEAD_SCALE)
            model.unembed.W_U.copy_(model.embed.W_E.T)
        else:
            model.unembed.W_U.mul_(HEAD_SCALE)
    tokens = torch.tensor([prompt_ids(tok)])
    with torch.no_grad():
        reference = torch.log_softmax(model(tokens)[0].float(), -1)
    if processed:
        model.process_weights_(**processing_flags(cfg))
        model.eval()
    return model, reference, tokens
