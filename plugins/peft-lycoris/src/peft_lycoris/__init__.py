"""peft-lycoris: what the LoHa and LoKr plugins share (no method of its own)."""

from __future__ import annotations

from peft_lycoris.config import LycorisConfig
from peft_lycoris.layer import LycorisLayer, kaiming_
from peft_lycoris.tuner import LycorisTuner, default_targets

__all__ = ["LycorisConfig", "LycorisLayer", "LycorisTuner", "default_targets", "kaiming_"]
