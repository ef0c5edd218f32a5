"""AdaLoRA meets the conformance suite that every tuner plugin runs (peft_core.testing)."""

from __future__ import annotations

from conformance_models import OnGpt2, OnMLP
from peft_adalora import AdaLoraConfig
from peft_core.testing import TunerConformance


class TestAdaLoraOnLinear(OnMLP, TunerConformance):
    config = AdaLoraConfig(
        init_r=4, target_r=2, total_step=10, target_modules=["lin0", "lin1"], modules_to_save=["head"]
    )
    second_config = AdaLoraConfig(init_r=2, target_r=1, total_step=10, target_modules=["lin1"])
    expected_keys = frozenset(
        {
            "base_model.model.lin0.lora_A",
            "base_model.model.lin0.lora_E",
            "base_model.model.lin0.lora_B",
            "base_model.model.lin1.lora_A",
            "base_model.model.lin1.lora_E",
            "base_model.model.lin1.lora_B",
            "base_model.model.head.weight",
            "base_model.model.head.bias",
        }
    )


class TestAdaLoraOnGpt2(OnGpt2, TunerConformance):
    config = AdaLoraConfig(init_r=4, total_step=10, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)
