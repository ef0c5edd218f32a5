"""LoRA meets the conformance suite that every tuner plugin runs (peft_core.testing)."""

from __future__ import annotations

from conformance_models import OnAttention, OnConvNet, OnEncoder, OnGpt2, OnGroupedConvNet, OnLlama, OnMixtral, OnMLP
from peft_core.testing import TunerConformance
from peft_lora import LoraConfig


class TestLoraOnLinearAndEmbedding(OnMLP, TunerConformance):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["emb", "lin0", "lin1"], modules_to_save=["head"])
    second_config = LoraConfig(r=2, target_modules=["lin1"])
    expected_keys = frozenset(
        {
            "base_model.model.emb.lora_embedding_A",
            "base_model.model.emb.lora_embedding_B",
            "base_model.model.lin0.lora_A.weight",
            "base_model.model.lin0.lora_B.weight",
            "base_model.model.lin1.lora_A.weight",
            "base_model.model.lin1.lora_B.weight",
            "base_model.model.head.weight",
            "base_model.model.head.bias",
        }
    )


class TestLoraOnConvolutions(OnConvNet, TunerConformance):
    config = LoraConfig(r=2, target_modules=["conv1d", "conv2d"])


class TestLoraOnGpt2(OnGpt2, TunerConformance):
    config = LoraConfig(r=4, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)


class TestLoraBiasOnLinear(OnMLP, TunerConformance):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["lin0", "lin1"], lora_bias=True)
    expected_keys = frozenset(
        f"base_model.model.{m}.lora_{k}" for m in ("lin0", "lin1") for k in ("A.weight", "B.weight", "B.bias")
    )


class TestLoraBiasOnConvolutions(OnConvNet, TunerConformance):
    config = LoraConfig(r=2, target_modules=["conv1d", "conv2d"], lora_bias=True)


class TestLoraBiasOnGpt2(OnGpt2, TunerConformance):
    config = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, lora_bias=True)


class TestLoraOnExpertParameters(OnMixtral, TunerConformance):
    config = LoraConfig(r=2, target_modules=[], target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])


class TestLoraWithTrainableTokens(OnLlama, TunerConformance):
    config = LoraConfig(r=2, target_modules=["q_proj"], trainable_token_indices=[1, 5, 9])


class TestLoraOnMultiheadAttention(OnAttention, TunerConformance):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["mha", "lin0"])
    second_config = LoraConfig(r=2, target_modules=["mha"])
    expected_keys = frozenset(
        {
            "base_model.model.mha.lora_A.weight",
            "base_model.model.mha.lora_B.weight",
            "base_model.model.mha.base_layer.out_proj.lora_A.weight",
            "base_model.model.mha.base_layer.out_proj.lora_B.weight",
            "base_model.model.lin0.lora_A.weight",
            "base_model.model.lin0.lora_B.weight",
        }
    )


class TestLoraOnTransformerEncoderAttention(OnEncoder, TunerConformance):
    config = LoraConfig(r=2, target_modules=["self_attn"])


class TestLoraOnGroupedConvolutions(OnGroupedConvNet, TunerConformance):
    config = LoraConfig(r=4, target_modules=["conv1d", "conv2d", "depthwise", "conv3d"], rank_pattern={"depthwise": 8})
    second_config = LoraConfig(r=2, target_modules=["conv2d", "conv3d"])


class TestLoraBiasOnGroupedConvolutions(OnGroupedConvNet, TunerConformance):
    config = LoraConfig(r=2, target_modules=["conv1d", "conv2d"], lora_bias=True)
