"""peft-lora-scaled: LoRA for ``ScaledLinear`` through the layer hook (a test fixture, not a product)."""

from peft_lora_scaled.layer import ScaledLinear, ScaledLoraLinear

__all__ = ["ScaledLinear", "ScaledLoraLinear"]
