"""peft-prefix-tuning: prefix tuning (``PrefixTuningConfig``, peft_type "PREFIX_TUNING") as a peft-core plugin."""

from __future__ import annotations

from peft_prefix_tuning.cache import layer_pairs, prefix_cache
from peft_prefix_tuning.config import PrefixTuningConfig
from peft_prefix_tuning.encoder import PrefixEncoder
from peft_prefix_tuning.tuner import PrefixTuningTuner

__all__ = ["PrefixEncoder", "PrefixTuningConfig", "PrefixTuningTuner", "layer_pairs", "prefix_cache"]
