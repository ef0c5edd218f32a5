"""``ScaledLinear``, a module type LoRA does not know, and the LoRA layer that adapts it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peft_core.contract import Capabilities
from peft_lora import Linear


class ScaledLinear(nn.Module):
    """``y = scale * (x W^T + b)`` with a fixed ``scale`` (as in some quantized or muP-style layers)."""

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features**0.5)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.linear(x, self.weight, self.bias)


class ScaledLoraLinear(Linear):
    """LoRA's forward as is (``ScaledLinear(x) + s_lora B A x``); merging divides the update by ``scale``,
    because the base weight is multiplied by it on the way out."""

    capabilities = Capabilities(mergeable=True)

    def delta_weight(self, adapter_name: str) -> Tensor:
        assert isinstance(self.base_layer, ScaledLinear)
        return super().delta_weight(adapter_name) / self.base_layer.scale
