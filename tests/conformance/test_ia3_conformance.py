"""IA3 meets the conformance suite that every tuner plugin runs (peft_core.testing)."""

from __future__ import annotations

from conformance_models import OnBert, OnConvNet, OnGpt2, OnLlama, OnMLP
from peft_core.testing import TunerConformance
from peft_ia3 import IA3Config


class TestIA3OnLinear(OnMLP, TunerConformance):
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


class TestIA3OnConvolutions(OnConvNet, TunerConformance):
    config = IA3Config(target_modules=["conv1d", "conv2d"], feedforward_modules=["conv2d"])


class TestIA3OnGpt2(OnGpt2, TunerConformance):
    config = IA3Config(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"], fan_in_fan_out=True)


class TestIA3OnBert(OnBert, TunerConformance):
    config = IA3Config(
        target_modules=["key", "value", "output.dense"],
        feedforward_modules=["output.dense"],
        modules_to_save=["classifier"],
    )
    second_config = IA3Config(target_modules=["query"])
    atol, merge_atol = 1e-8, 1e-7  # BERT's random-init logits are ~5e-3


class TestIA3OnLlama(OnLlama, TunerConformance):
    config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
