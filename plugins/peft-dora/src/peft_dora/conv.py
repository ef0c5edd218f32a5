"""DoRA on ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` (groups=1): the magnitude is per output channel."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from peft_dora.dora import DoraLayer
from peft_dora.linear import DORA_CAPABILITIES, bias_of
from peft_lora import Conv
from peft_lora.layer import weight_of


class DoraConv(DoraLayer, Conv):
    """``y = f * (conv(x, W) + s B(A(x))) + bias`` with ``f = m / ||W + s B A||`` per output channel.

    The magnitude is saved as ``(1, out_channels, 1, ...)``, as Hugging Face PEFT does.
    """

    adapter_attribute_names = ("lora_A", "lora_B", "lora_magnitude_vector")  # type: ignore[assignment]  # LoRA\'s plus the magnitude
    capabilities = DORA_CAPABILITIES

    def weight_rows(self, weight: Tensor) -> Tensor:
        return weight.flatten(1)  # (out_channels, in_channels * kernel)

    def magnitude_shape(self) -> tuple[int, ...]:
        weight = self._weight()
        return (1, weight.shape[0]) + (1,) * (weight.dim() - 2)

    def along_rows(self, factor: Tensor) -> Tensor:
        return factor.view(-1, *([1] * (self._weight().dim() - 1)))

    def _channels(self, vector: Tensor, like: Tensor) -> Tensor:
        return vector.view(1, -1, *([1] * (like.dim() - 2)))

    def without_bias(self, x: Tensor) -> Tensor:
        """The base convolution without its bias."""
        base = self.base_layer
        assert isinstance(base, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        result: Tensor = base._conv_forward(x, base.weight, None)
        return result

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if self.row_routing is not None and not self.disabled:
            result = self.scale_rows(Conv._forward_rows(self, x, self.without_bias(x)), channel_dim=1)
            return self._with_bias(result)
        if not self.use_adapters:
            return self.base_layer(x, *args, **kwargs)  # type: ignore[no-any-return]
        result = self.without_bias(x)
        out_dtype = result.dtype
        for name in self.active_adapters:
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            dtype = weight_of(lora_a).dtype
            factor = self._channels(self.dora_factor(name).to(dtype), result)
            scaling = self.scaling[name]
            dropout = self.lora_dropout[name]
            result = result.to(dtype)
            if self.training and not isinstance(dropout, nn.Identity):
                # As Hugging Face PEFT: result + (f - 1) conv(x~) + f s B(A(x~)).
                dropped = dropout(x.to(dtype))
                plain = self.without_bias(dropped.to(x.dtype)).to(dtype)
                result = result - plain + factor * (plain + lora_b(lora_a(dropped)) * scaling)
            else:
                result = factor * (result + lora_b(lora_a(x.to(dtype))) * scaling)
        return self._with_bias(result.to(out_dtype))

    def _with_bias(self, result: Tensor) -> Tensor:
        bias = bias_of(self.base_layer)
        return result if bias is None else result + self._channels(bias.to(result.dtype), result)
