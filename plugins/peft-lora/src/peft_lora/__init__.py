"""peft-lora: LoRA as a peft-core plugin."""

from __future__ import annotations

from peft_lora.config import LoraConfig
from peft_lora.conv import Conv
from peft_lora.embedding import Embedding
from peft_lora.initialisation import fast_init
from peft_lora.layer import Linear, LoraLayer
from peft_lora.tuner import LoraTuner
from peft_lora.variant import LoraVariant

__all__ = ["Conv", "Embedding", "Linear", "LoraConfig", "LoraLayer", "LoraTuner", "LoraVariant", "fast_init"]
