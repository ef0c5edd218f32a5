"""IA3 meets the conformance suite that every tuner plugin runs (peft_core.testing)."""

from __future__ import annotations

import torch
from torch import nn

from peft_core.testing import TunerConformance
from peft_ia3 import IA3Config
from support.models import MLP, ConvNet, tiny_gpt2, tiny_llama, token_ids


class TestIA3OnLinear(TunerConformance):
    config = IA3Config(target_modules=["lin0", "lin1"], feedforward_modules=["lin1"], modules_to_save=["head"])
    second_config = IA3Config(target_modules=["lin0", "lin1"], feedforward_modules=["lin0"])  # modes crossed
    expected_keys = frozenset(
        {
            "base_model.model.lin0.ia3_l",
            "base_model.model.lin1.ia3_l",
            "base_model.model.head.weight",
            "base_model.model.head.bias",
        }
    )

    def make_model(self) -> nn.Module:
        return MLP()

    def make_inputs(self) -> torch.Tensor:
        return torch.arange(12).reshape(3, 4) % 20


class TestIA3OnConvolutions(TunerConformance):
    config = IA3Config(target_modules=["conv1d", "conv2d"], feedforward_modules=["conv2d"])

    def make_model(self) -> nn.Module:
        return ConvNet()

    def make_inputs(self) -> torch.Tensor:
        return torch.randn(3, 4, 8, 8)


class TestIA3OnGpt2(TunerConformance):
    config = IA3Config(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"], fan_in_fan_out=True)
    merge_atol = 1e-4  # logits of a 2-layer model: fp32 rounding of the merged weights adds up

    def make_model(self) -> nn.Module:
        return tiny_gpt2()

    def make_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": token_ids(batch=3)}


class TestIA3OnLlama(TunerConformance):
    config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    merge_atol = 1e-4

    def make_model(self) -> nn.Module:
        return tiny_llama()

    def make_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": token_ids(batch=3)}
