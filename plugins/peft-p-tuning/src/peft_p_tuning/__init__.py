"""peft-p-tuning: p-tuning (``PromptEncoderConfig``, peft_type "P_TUNING") as a peft-core plugin."""

from __future__ import annotations

from peft_p_tuning.config import PromptEncoderConfig, PromptEncoderReparameterizationType
from peft_p_tuning.encoder import PromptEncoder
from peft_p_tuning.tuner import PTuningTuner

__all__ = ["PTuningTuner", "PromptEncoder", "PromptEncoderConfig", "PromptEncoderReparameterizationType"]
