"""Adapters on bitsandbytes-quantized layers (peft-bnb) meet the conformance suite.

Merging is not declared (it would re-quantize the weight) and must be refused; per-row
batches, hotswap and (LoRA) weighted combination are declared and checked.
"""

from __future__ import annotations

import pytest

pytest.importorskip("bitsandbytes")

from torch import nn

from peft_core.testing import TunerConformance
from peft_ia3 import IA3Config
from peft_lora import LoraConfig
from support.models import token_ids
from support.quantized import quantized_llama


class OnQuantizedLlama:
    kind = "nf4_double"
    merge_atol = 1e-4

    def make_model(self) -> nn.Module:
        return quantized_llama(self.kind)

    def make_inputs(self) -> dict[str, object]:
        return {"input_ids": token_ids(batch=3)}


class TestLoraOnNf4(OnQuantizedLlama, TunerConformance):
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"])
    second_config = LoraConfig(r=2, target_modules=["v_proj"])


class TestLoraOnInt8(OnQuantizedLlama, TunerConformance):
    kind = "int8"
    config = LoraConfig(r=4, target_modules=["q_proj", "up_proj"])


class TestDoraOnInt8(OnQuantizedLlama, TunerConformance):
    # 8-bit: a fresh DoRA adapter is the base model exactly. (On CPUs with AVX512-BF16,
    # bitsandbytes rewrites 4-bit weights at the first inference call with bf16 block
    # scales, which moves the base weight, and so its norm, by ~1e-3 after the magnitude
    # was initialised; tests/bnb covers DoRA on 4-bit.)
    kind = "int8"
    config = LoraConfig(r=4, target_modules=["q_proj", "down_proj"], use_dora=True)


class TestIA3OnFp4(OnQuantizedLlama, TunerConformance):
    kind = "fp4"
    config = IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])
