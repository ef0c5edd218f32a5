"""peft-ia3: IA3 as a peft-core plugin."""

from __future__ import annotations

from peft_ia3.config import IA3Config
from peft_ia3.layer import IA3Layer
from peft_ia3.tuner import IA3Tuner

__all__ = ["IA3Config", "IA3Layer", "IA3Tuner"]
