"""Small transformers models quantized by bitsandbytes on the CPU (real kernels, no mocks).

A random tiny Llama is saved to a folder and loaded back with a ``BitsAndBytesConfig``,
as a user loads a quantized model: its linear layers become ``Linear4bit`` (nf4 or fp4,
optionally double-quantized) or ``Linear8bitLt``.
"""

from __future__ import annotations

import tempfile
import warnings
from functools import cache

import torch
from torch import nn

#: Quantization settings by name: what the tests run over.
KINDS = {
    "nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "nf4_double": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
    "fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
    "int8": {"load_in_8bit": True},
}


def llama_for_quantization(seed: int = 0) -> nn.Module:
    """A tiny Llama whose layers bitsandbytes' CPU kernels take: inputs a multiple of its block
    size (64), outputs of 32 (the packed eval-mode layout of 4-bit weights needs both)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


@cache
def _saved_llama() -> str:
    folder = tempfile.mkdtemp(prefix="peft-tiny-llama-")
    llama_for_quantization().save_pretrained(folder)
    return folder


def quantized_llama(kind: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``llama_for_quantization()`` with every linear layer but the head quantized; the rest (and
    4-bit compute) in ``dtype``."""
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    settings = dict(KINDS[kind])
    if settings.get("load_in_4bit"):
        settings["bnb_4bit_compute_dtype"] = dtype
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LlamaForCausalLM.from_pretrained(
            _saved_llama(), quantization_config=BitsAndBytesConfig(**settings), dtype=dtype, device_map="cpu"
        )
    return model.eval()
