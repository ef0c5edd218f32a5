"""peft-lokr: LoKr (low-rank Kronecker product) as a peft-core plugin."""

from __future__ import annotations

from peft_lokr.config import LoKrConfig, factorization
from peft_lokr.layer import LoKrLayer
from peft_lokr.plugin import LoKrTuner

__all__ = ["LoKrConfig", "LoKrLayer", "LoKrTuner", "factorization"]
