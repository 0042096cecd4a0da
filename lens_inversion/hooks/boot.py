"""Boot a TransformerBridge: the one place that calls TransformerLens's loaders."""

# Fused query/key/value projections per Hugging Face model type. TransformerLens splits
# them into Q, K and V at boot, which needs readable (unquantized) weights, so they are
# kept out of bitsandbytes quantization along with the output head.
FUSED_QKV = {
    "gpt2": ["c_attn"],
    "gpt_bigcode": ["c_attn"],
    "qwen": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "falcon": ["query_key_value"],
    "phi3": ["qkv_proj"],
}


def _keep_unquantized(source: str) -> list[str] | None:
    """Modules bitsandbytes must skip for this model: fused QKV and the head (None: HF's default)."""
    from transformers import AutoConfig

    model_type = getattr(AutoConfig.from_pretrained(source), "model_type", None)  # offline-ok: same source as the model
    fused = FUSED_QKV.get(model_type) if isinstance(model_type, str) else None
    return None if fused is None else [*fused, "lm_head"]


def boot_bridge(source: str, *, device, dtype, load_in_8bit: bool, load_in_4bit: bool, device_map, hf_kwargs: dict):
    """A TransformerBridge from a local Hugging Face directory or a hub name.

    Quantized (bitsandbytes) and `device_map` loads go through `AutoModelForCausalLM`
    first and hand the loaded model to the bridge; plain loads let the bridge load it.
    Blocks whose Hugging Face layer returns a list (OpenAI-GPT) get a repair so their
    output hook (`hook_resid_post`) fires for TransformerLens's own hooks too
    (`interventions.repair_list_outputs`).
    """
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    from .interventions import repair_list_outputs

    if load_in_8bit or load_in_4bit or device_map is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        quant = None
        if load_in_8bit or load_in_4bit:
            quant = BitsAndBytesConfig(
                load_in_8bit=load_in_8bit, load_in_4bit=load_in_4bit, llm_int8_skip_modules=_keep_unquantized(source)
            )
        # `source` is the shipped model, a local directory, or a hub name the user chose.
        hf = AutoModelForCausalLM.from_pretrained(  # offline-ok
            source, quantization_config=quant, device_map=device_map or "auto", dtype=dtype, **hf_kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(source)  # offline-ok
        bridge = TransformerBridge.boot_transformers(source, hf_model=hf, tokenizer=tokenizer, dtype=dtype)
    else:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        bridge = TransformerBridge.boot_transformers(source, device=device, dtype=dtype, **hf_kwargs)
    repair_list_outputs(bridge)
    return bridge
