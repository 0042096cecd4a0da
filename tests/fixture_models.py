"""Tiny offline models for tests: native bridges, bridges booted from local HF directories,
and (on TransformerLens 3.x) HookedTransformer. Nothing here touches the network."""

import functools
import tempfile
from pathlib import Path

import torch

CORPUS = [
    "The sky is blue. The grass is green. The sun is bright and the sea is deep.",
    "A cat sat on the mat while the dog slept by the door of the old house.",
    "In the morning the birds sing, and in the evening the stars come out.",
    "The wipers on the bus go swish swish, all through the town.",
    "Plasma is a state of matter; plasma is hot, and plasma glows in the dark.",
    "She reads books about rivers, mountains, forests and the people who live there.",
    "Numbers like 1, 2, 3 and 42 appear in text, and so do names like Alice and Bob.",
] * 20

GPT2_SHAPE = dict(d_model=64, d_head=16, n_heads=4, n_layers=2, n_ctx=32)


def has_hooked_transformer() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except Exception:
        return False
    return True


@functools.cache
def tokenizer():
    """A byte-level BPE tokenizer of 300 tokens trained on CORPUS; BOS = EOS, pad distinct."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    # TransformerLens re-creates tokenizers from their saved directory, so give it one.
    path = Path(tempfile.mkdtemp(prefix="li-tok-"))
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(str(path))  # local directory  # offline-ok


def _native(kind: str, seed: int = 0):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    common = dict(d_vocab=len(tokenizer()), seed=seed, device="cpu", **GPT2_SHAPE)
    if kind == "gpt2":
        cfg = TransformerBridgeConfig(act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard", **common)
    else:
        cfg = TransformerBridgeConfig(
            n_key_value_heads=2, act_fn="silu", gated_mlp=True, normalization_type="RMS", final_rms=True,
            positional_embedding_type="rotary", rotary_base=10000, **common,
        )
    return TransformerBridge.boot_native(cfg, tokenizer=tokenizer()).eval()


@functools.cache
def hf_dir(kind: str) -> Path:
    """Save a random HF model of `kind` ('gpt2' or 'llama') with the tokenizer; return the path."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = tokenizer()
    path = Path(tempfile.mkdtemp(prefix=f"li-{kind}-"))
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=64, n_layer=2, n_head=4,
                                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    else:
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _hf(kind: str, compat: bool):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(hf_dir(kind)), device="cpu")
    if compat:
        bridge.enable_compatibility_mode()
    return bridge.eval()


def _hooked(kind: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    common = dict(d_vocab=len(tokenizer()), seed=0, device="cpu", **GPT2_SHAPE)
    if kind == "gpt2":
        cfg = HookedTransformerConfig(act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard", **common)
    else:
        cfg = HookedTransformerConfig(
            n_key_value_heads=2, act_fn="silu", gated_mlp=True, normalization_type="RMS", final_rms=True,
            positional_embedding_type="rotary", rotary_base=10000, **common,
        )
    return HookedTransformer(cfg, tokenizer=tokenizer()).eval()


BRIDGE_MODELS = ("gpt2-native", "llama-native", "gpt2-hf", "llama-hf", "gpt2-hf-compat")
HOOKED_MODELS = ("gpt2-hooked", "llama-hooked")


def available_models() -> tuple[str, ...]:
    """Every fixture name this TransformerLens install can build."""
    from transformer_lens import model_bridge  # noqa: F401  (present in 3.9 and 4.x)

    names = BRIDGE_MODELS
    if has_hooked_transformer():
        names = (*HOOKED_MODELS, "gpt2-native", "llama-native")
    return names


@functools.cache
def build(name: str):
    """Build (once per test session) the tiny model called `name`, already run once."""
    return build_fresh(name)


def build_fresh(name: str):
    """A new, private instance of the tiny model called `name` (same weights as `build`)."""
    kind, *rest = name.split("-")
    source = rest[0]
    if source == "native":
        model = _native(kind)
    elif source == "hf":
        model = _hf(kind, compat="compat" in rest)
    elif source == "hooked":
        model = _hooked(kind)
    else:
        raise KeyError(name)
    with torch.no_grad():  # a model users have already run: backends wire lazy internals on the first forward
        model(torch.tensor([[1, 2, 3]]))
    return model
