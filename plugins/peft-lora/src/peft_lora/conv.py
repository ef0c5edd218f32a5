"""LoRA on ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d``: A has the base kernel, B is 1x1."""

from __future__ import annotations

from typing import Any, TypeGuard

import torch
from torch import Tensor, nn

from peft_core.contract import ConfigError, weights_will_be_loaded
from peft_lora.config import LoraConfig
from peft_lora.initialisation import RANDOM_INITS, factor_device, init_factors, round_like_base
from peft_lora.layer import LORA_CAPABILITIES, LoraLayer, weight_of


class Conv(LoraLayer):
    """``y = conv(x) + scaling * B(A(x))``: A is conv(in -> r) with the base kernel, stride,
    padding and dilation; B is a 1x1 conv(r -> out), grouped in ``GroupedConv``. ``groups=1`` bases here."""

    adapter_attribute_names = ("lora_A", "lora_B")
    capabilities = LORA_CAPABILITIES

    def __init__(self, base_layer: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> None:
        super().__init__(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()

    def update_layer(self, adapter_name: str, config: LoraConfig) -> None:  # type: ignore[override]
        if config.init_lora_weights not in RANDOM_INITS or config.init_lora_weights == "orthogonal":
            raise ConfigError(
                f"init_lora_weights={config.init_lora_weights!r} is not defined for convolutions (as in Hugging Face "
                "PEFT); use True, False or 'gaussian' for conv layers, or leave them out of target_modules"
            )
        self._set_hyperparameters(adapter_name, config)
        base = self.base_layer
        assert isinstance(base, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        conv = type(base)
        loading = weights_will_be_loaded()
        device = base.weight.device if loading else factor_device(base.weight.device)
        # Built on the meta device and given memory without PyTorch's init: initialised once, below.
        kernel, stride, padding, dilation = base.kernel_size, base.stride, base.padding, base.dilation
        lora_a = conv(base.in_channels, config.r, kernel, stride, padding, dilation, bias=False, device="meta")  # type: ignore[arg-type]
        groups = self.b_groups()
        lora_b = conv(
            config.r, base.out_channels, 1, 1, groups=groups, bias=config.lora_bias, device="meta"
        )  # bias: lora_bias
        lora_a, lora_b = lora_a.to_empty(device=device), lora_b.to_empty(device=device)
        if not loading:
            a, b, bias = weight_of(lora_a), weight_of(lora_b), lora_b.bias if config.lora_bias else None
            with torch.no_grad():
                init_factors(a, b, config.init_lora_weights, config.r, bias)
            round_like_base((a, b) if bias is None else (a, b, bias), base.weight.dtype)
        self.lora_A[adapter_name] = lora_a
        self.lora_B[adapter_name] = lora_b

    def b_groups(self) -> int:
        """Groups of the 1x1 ``B`` convolution (1: ``B`` mixes all r hidden channels)."""
        return 1

    def delta_rows(self, adapter_name: str, start: int, stop: int) -> Tensor:
        a = weight_of(self.lora_A[adapter_name]).float()
        b = weight_of(self.lora_B[adapter_name]).float()
        return (b.flatten(1)[start:stop] @ a.flatten(1)).mul_(self.scaling[adapter_name])  # (out, in * kernel)

    def lora_factors(self, adapter_name: str) -> tuple[Tensor, Tensor]:
        return weight_of(self.lora_A[adapter_name]).flatten(1), weight_of(self.lora_B[adapter_name]).flatten(1)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        result: Tensor = self.base_layer(x, *args, **kwargs)
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x, result)
        if not self.use_adapters:
            return result
        for name in self.active_adapters:
            lora_a = self.lora_A[name]
            dropped = self._adapter_input(x, name, weight_of(lora_a).dtype)
            result = result + (self.lora_B[name](lora_a(dropped)) * self.scaling[name]).to(result.dtype)
        return result

    def _forward_rows(self, x: Tensor, result: Tensor) -> Tensor:
        # Convolutions are not a per-row matrix product; group the rows by adapter instead.
        assert self.row_routing is not None
        names = list(self.lora_A.keys())
        self._check_row_dropout(names)
        index = self.row_routing.layer_index(names, x.device)
        for position, name in enumerate(names, start=1):
            rows = (index == position).nonzero().flatten()
            if rows.numel():
                lora_a = self.lora_A[name]
                delta = self.lora_B[name](lora_a(x[rows].to(weight_of(lora_a).dtype))) * self.scaling[name]
                result = result.index_add(0, rows, delta.to(result.dtype))
        return result


def is_supported_conv(module: nn.Module) -> TypeGuard[nn.Conv1d | nn.Conv2d | nn.Conv3d]:
    """Conv1d/2d/3d with ``groups=1`` (grouped ones take ``grouped_conv.GroupedConv``)."""
    return (
        isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        and module.groups == 1
        and torch.is_floating_point(module.weight)
    )
