"""merge_and_unload writes LoRA's update in place, block by block: the bits of ``merged_weights``
for every layer type, dtype and block size; a variant that merges its own way keeps its own."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import peft_lora.layer
from peft_core import inject_adapter_in_model
from peft_core.contract import Merge
from peft_core.engine.merging import unload
from peft_lora import Linear, LoraConfig


def _holder(module: nn.Module, adapters: int = 2) -> nn.Module:
    holder = nn.Module()
    holder.layer = module
    for i in range(adapters):
        config = LoraConfig(r=3 + i, lora_alpha=5, target_modules=["layer"], init_lora_weights=False)
        inject_adapter_in_model(config, holder, f"a{i}")
    holder.layer.set_active_adapters(["a0", "a1"][:adapters])
    return holder


BASES = {
    "linear": lambda dtype: nn.Linear(13, 21, dtype=dtype),
    "conv1d-transformers": lambda dtype: Conv1D(21, 13).to(dtype),
    "embedding": lambda dtype: nn.Embedding(17, 9, dtype=dtype),
    "conv2d": lambda dtype: nn.Conv2d(4, 6, 3, dtype=dtype),
}


@pytest.mark.parametrize("kind", BASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("block_values", [1, 40, 1 << 20])  # one row per block, a few rows, all rows
def test_in_place_merge_writes_the_bits_of_merged_weights(
    kind: str, dtype: torch.dtype, block_values: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    monkeypatch.setattr(peft_lora.layer, "MERGE_BLOCK_VALUES", block_values)
    holder = _holder(BASES[kind](dtype))
    layer = holder.layer
    expected = layer.merged_weights(["a0", "a1"]).weights["weight"].clone()
    before = layer.base_layer.weight.detach().clone()
    merged = unload(holder, merge=True)
    weight = merged.layer.weight
    assert weight.dtype == dtype and torch.equal(weight, expected)
    assert not torch.equal(weight, before)


class _ScalingVariant(Linear):
    """A variant whose merge is not additive (as DoRA's is not): the engine must use its merged_weights."""

    capabilities = Linear.capabilities

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        return Merge({"weight": self.base_layer.weight.detach() * 2.0})


def test_a_variant_with_its_own_merge_is_merged_its_own_way() -> None:
    holder = nn.Module()
    holder.layer = _ScalingVariant(nn.Linear(5, 7))
    holder.layer.add_adapter("default", LoraConfig(r=2, target_modules=["layer"], init_lora_weights=False))
    holder.layer.set_active_adapters(["default"])
    weight = holder.layer.base_layer.weight.detach().clone()
    merged = unload(holder, merge=True)
    assert torch.equal(merged.layer.weight, weight * 2.0)
