"""peft-loha: LoHa (low-rank Hadamard product) as a peft-core plugin."""

from __future__ import annotations

from peft_loha.config import LoHaConfig
from peft_loha.layer import LoHaLayer
from peft_loha.plugin import LoHaTuner

__all__ = ["LoHaConfig", "LoHaLayer", "LoHaTuner"]
