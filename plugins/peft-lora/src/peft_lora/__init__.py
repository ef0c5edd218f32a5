"""peft-lora: LoRA as a peft-core plugin."""

from __future__ import annotations

from peft_lora.config import LoraConfig
from peft_lora.conv import Conv
from peft_lora.conversion import Conversion, LayerConversion, convert_to_lora, lora_conversion
from peft_lora.convert_command import save_as_lora
from peft_lora.dropout import fast_dropout
from peft_lora.embedding import Embedding
from peft_lora.initialisation import fast_init
from peft_lora.layer import Linear, LoraLayer
from peft_lora.mha import MultiheadAttention
from peft_lora.tuner import LoraTuner
from peft_lora.variant import LoraVariant

__all__ = [
    "Conv",
    "Conversion",
    "Embedding",
    "LayerConversion",
    "Linear",
    "LoraConfig",
    "LoraLayer",
    "LoraTuner",
    "LoraVariant",
    "MultiheadAttention",
    "convert_to_lora",
    "fast_dropout",
    "fast_init",
    "lora_conversion",
    "save_as_lora",
]
