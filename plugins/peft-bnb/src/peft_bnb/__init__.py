"""peft-bnb: LoRA, DoRA and IA3 on bitsandbytes-quantized layers (QLoRA), through peft-core's layer hook.

Installed, it is used by itself: ``get_peft_model`` on a model loaded in 4 or 8 bits
gets quantized adapter layers (``peft_bnb.layers``). Import the training preparation
from here: ``from peft_bnb import prepare_model_for_kbit_training``. The layer classes
live in ``peft_bnb.layers`` (importing them imports bitsandbytes).
"""

from __future__ import annotations

from peft_bnb.kbit import is_quantized, prepare_model_for_kbit_training

__all__ = ["is_quantized", "prepare_model_for_kbit_training"]
