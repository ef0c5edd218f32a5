"""peft-adalora: AdaLoRA (adaptive rank allocation, SVD form) as a peft-core plugin."""

from __future__ import annotations

from peft_adalora.config import AdaLoraConfig
from peft_adalora.importance import ImportanceState
from peft_adalora.layer import SVDLinear
from peft_adalora.tuner import AdaLoraTuner

__all__ = ["AdaLoraConfig", "AdaLoraTuner", "ImportanceState", "SVDLinear"]
