"""``DoraVariant``: the layers peft-lora uses for a config with ``use_dora=True``."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from peft_core.contract import is_conv1d
from peft_dora.conv import DoraConv
from peft_dora.embedding import DoraEmbedding
from peft_dora.linear import DoraLinear
from peft_lora import LoraConfig, LoraLayer, LoraVariant
from peft_lora.conv import is_supported_conv


class DoraVariant(LoraVariant):
    """DoRA for nn.Linear, transformers Conv1D, nn.Embedding and nn.Conv1d/2d/3d (groups=1):
    the layer types Hugging Face PEFT supports it on."""

    flags: ClassVar[tuple[str, ...]] = ("use_dora",)

    def create_layer(self, target: nn.Module, config: LoraConfig) -> LoraLayer | None:
        if isinstance(target, nn.Linear):
            return DoraLinear(target)
        if is_conv1d(target):
            return DoraLinear(target, fan_in_fan_out=True)
        if isinstance(target, nn.Embedding):
            return DoraEmbedding(target)
        if is_supported_conv(target):
            return DoraConv(target)
        return None
