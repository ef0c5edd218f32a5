"""``BiasDeltaLayer``: adds a learned delta to a layer's output, where its bias would go."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from peft_bitfit.config import BitFitConfig
from peft_core.contract import AdapterLayer, Capabilities, ConfigError, Merge

# Layers whose bias is indexed by dim 1 of the output (channels); for the rest it is the trailing dims.
CHANNELS_FIRST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)


class BiasDeltaLayer(AdapterLayer):
    """One ``bias_delta`` per adapter, shaped like ``base_layer.bias``; active adapters add up."""

    adapter_attribute_names = ("bias_delta",)
    capabilities = Capabilities(mergeable=True, per_row=True, hotswap=True)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        if not isinstance(getattr(base_layer, "bias", None), nn.Parameter):
            raise ConfigError(f"BitFit needs a layer with a bias; {type(base_layer).__name__} has none")
        self.bias_delta = nn.ParameterDict()

    def _bias(self) -> Tensor:
        return self.base_layer.get_parameter("bias")

    def update_layer(self, adapter_name: str, config: BitFitConfig) -> None:  # type: ignore[override]
        bias = self._bias()
        delta = torch.zeros(bias.shape, device=bias.device)
        if config.init_scale:
            delta.normal_(std=config.init_scale)
        self.bias_delta[adapter_name] = nn.Parameter(delta)

    def _shaped(self, delta: Tensor, out: Tensor, batch_dims: int = 0) -> Tensor:
        """``delta`` (``batch_dims`` leading dims, then the bias shape) broadcast against ``out``."""
        if isinstance(self.base_layer, CHANNELS_FIRST):
            return delta.reshape(*delta.shape[: batch_dims + 1], *[1] * (out.dim() - 2))
        return delta.reshape(*delta.shape[:batch_dims], *[1] * (out.dim() - delta.dim()), *delta.shape[batch_dims:])

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out: Tensor = self.base_layer(x, *args, **kwargs)
        if self.row_routing is not None and not self.disabled:
            names = list(self.bias_delta.keys())
            deltas = torch.stack([torch.zeros_like(self.bias_delta[names[0]])] + [self.bias_delta[n] for n in names])
            rows = deltas[self.row_routing.layer_index(names, out.device)]  # (batch, *bias shape)
            return (out + self._shaped(rows, out, batch_dims=1)).to(out.dtype)
        if not self.use_adapters:
            return out
        delta = sum(self.bias_delta[n] for n in self.active_adapters)
        assert isinstance(delta, Tensor)
        return (out + self._shaped(delta, out)).to(out.dtype)

    def _bias_with(self, adapter_names: Sequence[str], sign: float) -> dict[str, Tensor]:
        bias = self._bias()
        total = bias.float() + sign * sum(self.bias_delta[n].float() for n in adapter_names)
        assert isinstance(total, Tensor)
        return {"bias": total.to(bias.dtype)}

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        return Merge(self._bias_with(adapter_names, 1.0))

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        return self._bias_with(adapter_names, -1.0)
