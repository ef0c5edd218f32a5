"""Test-only adapters for the conversion to LoRA: what it reads is the contract, never a method's names.

- ``DENSE`` (``DenseDelta``): a full ``out x in`` update matrix per adapter, additive
  (``delta_weight``), so its rank is whatever the test puts in.
- ``ROWSCALE`` (``RowScale``): ``W' = diag(1 + s) W``, merged through ``merged_weights`` only;
  its ``delta_weight`` is inherited from ``DenseDelta`` and *wrong* for it (zeros), as a
  variant that subclasses an additive layer would inherit one: the conversion must notice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

import peft_core
from peft_core.contract import AdapterLayer, BaseTuner, Capabilities, Merge, PeftConfig, TargetedConfig
from peft_core.registry import registry


class DenseConfig(TargetedConfig):
    peft_type: Literal["DENSE"] = "DENSE"


class RowScaleConfig(TargetedConfig):
    peft_type: Literal["ROWSCALE"] = "ROWSCALE"


class DenseDelta(AdapterLayer):
    """``y = (W + D) x + b``: ``dense_delta`` holds D (the weight's shape)."""

    adapter_attribute_names = ("dense_delta",)
    capabilities = Capabilities(mergeable=True)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.dense_delta = nn.ParameterDict()

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        self.dense_delta[adapter_name] = nn.Parameter(torch.zeros_like(self.base_layer.get_parameter("weight")))

    def delta_weight(self, adapter_name: str) -> Tensor:
        return self.dense_delta[adapter_name].float()

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.base_layer(x)
        for name in self.active_adapters if self.use_adapters else []:
            result = result + nn.functional.linear(x, self.dense_delta[name])
        return result


class RowScale(DenseDelta):
    """``y = diag(1 + s) W x + b`` (the bias unscaled): ``dense_delta`` holds s as (out, 1)."""

    capabilities = Capabilities(mergeable=True)

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        self.dense_delta[adapter_name] = nn.Parameter(torch.zeros(self.base_layer.get_parameter("weight").shape[0], 1))

    def delta_weight(self, adapter_name: str) -> Tensor:
        return torch.zeros_like(self.base_layer.get_parameter("weight"))  # wrong on purpose (see the module doc)

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        weight = self.base_layer.get_parameter("weight").detach()
        scale = torch.ones_like(weight[:, :1])
        for name in adapter_names:
            scale = scale * (1 + self.dense_delta[name].detach())
        return Merge({"weight": weight * scale})

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        base = self.base_layer
        assert isinstance(base, nn.Linear)
        weight = self.merged_weights(self.active_adapters).weights["weight"] if self.use_adapters else base.weight
        return nn.functional.linear(x, weight, base.bias)


class DenseTuner(BaseTuner):
    name = "dense_test"
    config_class: ClassVar[type[PeftConfig]] = DenseConfig

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        return DenseDelta(target) if isinstance(target, nn.Linear) else None


class RowScaleTuner(BaseTuner):
    name = "rowscale_test"
    config_class: ClassVar[type[PeftConfig]] = RowScaleConfig

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        return RowScale(target) if isinstance(target, nn.Linear) else None


@contextmanager
def registered() -> Iterator[None]:
    """Both test tuners registered in this process, for the block."""
    peft_core.register_tuner(DenseTuner)
    peft_core.register_tuner(RowScaleTuner)
    try:
        yield
    finally:
        registry.unregister_tuner(DenseTuner.name)
        registry.unregister_tuner(RowScaleTuner.name)
