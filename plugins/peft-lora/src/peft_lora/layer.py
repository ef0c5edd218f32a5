"""LoRA layers for linear maps: ``nn.Linear`` and transformers' ``Conv1D`` (transposed weight)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from peft_core import AdapterLayer, PeftError
from peft_lora.config import LoraConfig


class LoraLayer(AdapterLayer):
    """Rank, scale and dropout per adapter; additive merging in fp32 with one rounding."""

    supports_row_routing = True
    rank_dims: ClassVar[Mapping[str, int]] = {
        "lora_A.weight": 0,
        "lora_B.weight": 1,
        "lora_embedding_A": 0,
        "lora_embedding_B": 1,
    }

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.r: dict[str, int] = {}
        self.scaling: dict[str, float] = {}
        self.lora_dropout = nn.ModuleDict()

    def _set_hyperparameters(self, adapter_name: str, config: LoraConfig) -> None:
        self.r[adapter_name] = config.r
        self.scaling[adapter_name] = config.scaling()
        self.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self.r.pop(adapter_name, None)
        self.scaling.pop(adapter_name, None)
        if adapter_name in self.lora_dropout:
            del self.lora_dropout[adapter_name]

    def delta_weight(self, adapter_name: str) -> Tensor:
        """The adapter's update of the base weight, in fp32, shaped like the weight."""
        raise NotImplementedError

    def _weight(self) -> Tensor:
        return self.base_layer.get_parameter("weight")

    def merged_weights(self, adapter_names: Sequence[str]) -> dict[str, Tensor]:
        weight = self._weight()  # summed in fp32 (fp64 for an fp64 base), rounded once
        total = weight.to(torch.promote_types(weight.dtype, torch.float32)) + sum(map(self.delta_weight, adapter_names))
        return {"weight": total.to(weight.dtype)}

    def unmerged_weights(self, adapter_names: Sequence[str]) -> dict[str, Tensor]:
        weight = self._weight()
        total = weight.to(torch.promote_types(weight.dtype, torch.float32)) - sum(map(self.delta_weight, adapter_names))
        return {"weight": total.to(weight.dtype)}

    def _check_row_dropout(self, names: Sequence[str]) -> None:
        if self.training and any(isinstance(self.lora_dropout[n], nn.Dropout) for n in names):
            raise PeftError(
                "per-row adapters with lora_dropout > 0 only run in eval mode: call model.eval() "
                "or use adapters with lora_dropout=0"
            )

    def _stacked(self, names: Sequence[str], a: Sequence[Tensor], b: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """A as (n+1, r_max, in) and scaled B as (n+1, out, r_max); slot 0 is all zeros."""
        r_max = max(self.r[n] for n in names)
        first = a[0]
        stack_a = first.new_zeros((len(names) + 1, r_max, a[0].shape[1]))
        stack_b = first.new_zeros((len(names) + 1, b[0].shape[0], r_max))
        for i, name in enumerate(names, start=1):
            r = self.r[name]
            stack_a[i, :r] = a[i - 1]
            stack_b[i, :, :r] = b[i - 1] * self.scaling[name]
        return stack_a, stack_b


def weight_of(module: nn.Module) -> Tensor:
    """``module.weight``, typed (``nn.Module.__getattr__`` is not)."""
    weight = module.weight
    assert isinstance(weight, Tensor)
    return weight


def _init_linear_pair(lora_a: nn.Module, lora_b: nn.Module, init: bool | str, r: int) -> None:
    if init is False:
        return  # both keep PyTorch's random init: a non-trivial adapter for tests
    if init == "gaussian":
        nn.init.normal_(weight_of(lora_a), std=1 / r)
    else:
        nn.init.kaiming_uniform_(weight_of(lora_a), a=math.sqrt(5))
    nn.init.zeros_(weight_of(lora_b))


class Linear(LoraLayer):
    """LoRA on ``nn.Linear`` (weight (out, in)) or ``Conv1D`` (weight (in, out): fan_in_fan_out)."""

    adapter_attribute_names = ("lora_A", "lora_B")

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool = False) -> None:
        super().__init__(base_layer)
        self.fan_in_fan_out = fan_in_fan_out
        weight = self._weight()
        self.in_features, self.out_features = weight.shape[::-1] if not fan_in_fan_out else weight.shape
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        self._set_hyperparameters(adapter_name, config)
        device = self._weight().device
        lora_a = nn.Linear(self.in_features, config.r, bias=False, device=device)
        lora_b = nn.Linear(config.r, self.out_features, bias=False, device=device)
        _init_linear_pair(lora_a, lora_b, config.init_lora_weights, config.r)
        self.lora_A[adapter_name] = lora_a
        self.lora_B[adapter_name] = lora_b

    def delta_weight(self, adapter_name: str) -> Tensor:
        a = weight_of(self.lora_A[adapter_name]).float()
        b = weight_of(self.lora_B[adapter_name]).float()
        delta = (b @ a) * self.scaling[adapter_name]
        return delta.T if self.fan_in_fan_out else delta

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x, result)
        if not self.use_adapters:
            return result
        for name in self.active_adapters:
            lora_a = self.lora_A[name]
            dropped = self.lora_dropout[name](x.to(weight_of(lora_a).dtype))
            result = result + (self.lora_B[name](lora_a(dropped)) * self.scaling[name]).to(result.dtype)
        return result

    def _forward_rows(self, x: Tensor, result: Tensor) -> Tensor:
        assert self.row_routing is not None
        names = list(self.lora_A.keys())
        self._check_row_dropout(names)
        index = self.row_routing.layer_index(names, x.device)
        stack_a, stack_b = self._stacked(
            names, [weight_of(self.lora_A[n]) for n in names], [weight_of(self.lora_B[n]) for n in names]
        )
        rows = x.reshape(x.shape[0], -1, x.shape[-1]).to(stack_a.dtype)
        hidden = torch.bmm(rows, stack_a[index].transpose(1, 2))
        delta = torch.bmm(hidden, stack_b[index].transpose(1, 2))
        return result + delta.reshape(result.shape).to(result.dtype)
