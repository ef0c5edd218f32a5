"""LoRA meets the conformance suite that every tuner plugin runs (peft_core.testing)."""

from __future__ import annotations

import torch
from torch import nn

from peft_core.testing import TunerConformance
from peft_lora import LoraConfig
from support.models import MLP, ConvNet, tiny_gpt2, token_ids


class TestLoraOnLinearAndEmbedding(TunerConformance):
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

    def make_model(self) -> nn.Module:
        return MLP()

    def make_inputs(self) -> torch.Tensor:
        return torch.arange(12).reshape(3, 4) % 20


class TestLoraOnConvolutions(TunerConformance):
    config = LoraConfig(r=2, target_modules=["conv1d", "conv2d"])

    def make_model(self) -> nn.Module:
        return ConvNet()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(3, 4, 8, 8)


class TestLoraOnGpt2(TunerConformance):
    config = LoraConfig(r=4, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)
    merge_atol = 1e-4  # logits of a 2-layer model: fp32 rounding of the merged weights adds up

    def make_model(self) -> nn.Module:
        return tiny_gpt2()

    def make_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": token_ids(batch=3)}
