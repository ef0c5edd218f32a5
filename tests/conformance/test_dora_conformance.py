"""DoRA (peft-dora) meets the conformance suite: its declared capabilities are checked, the rest refused."""

from __future__ import annotations

from conformance_models import OnConvNet, OnGpt2, OnLlama, OnMLP
from peft_core.testing import TunerConformance
from peft_lora import LoraConfig


class TestDoraOnLinearAndEmbedding(OnMLP, TunerConformance):
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["emb", "lin0", "lin1"], modules_to_save=["head"], use_dora=True
    )
    second_config = LoraConfig(r=2, target_modules=["lin1", "emb"], use_dora=True)
    expected_keys = frozenset(
        {
            "base_model.model.emb.lora_embedding_A",
            "base_model.model.emb.lora_embedding_B",
            "base_model.model.emb.lora_magnitude_vector",
            "base_model.model.lin0.lora_A.weight",
            "base_model.model.lin0.lora_B.weight",
            "base_model.model.lin0.lora_magnitude_vector",
            "base_model.model.lin1.lora_A.weight",
            "base_model.model.lin1.lora_B.weight",
            "base_model.model.lin1.lora_magnitude_vector",
            "base_model.model.head.weight",
            "base_model.model.head.bias",
        }
    )


class TestDoraOnConvolutions(OnConvNet, TunerConformance):
    config = LoraConfig(r=2, target_modules=["conv1d", "conv2d"], use_dora=True)


class TestDoraOnGpt2(OnGpt2, TunerConformance):
    config = LoraConfig(r=4, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, use_dora=True)


class TestDoraOnLlama(OnLlama, TunerConformance):
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True)
