"""peft-oft: OFT (orthogonal fine-tuning) as a peft-core plugin."""

from __future__ import annotations

from peft_oft.config import OFTConfig
from peft_oft.layer import Conv2d, Embedding, Linear, OFTLayer, PatchConv2d
from peft_oft.plugin import OFTTuner

__all__ = ["Conv2d", "Embedding", "Linear", "OFTConfig", "OFTLayer", "OFTTuner", "PatchConv2d"]
