"""``y = g * f(x)`` per target; ``adapter_loss`` adds ``reg_weight * sum((g - 1)^2)``,
``on_step_end`` projects ``g`` into ``[1 - max_change, 1 + max_change]``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from peft_core.contract import (
    AdaptedModel,
    AdapterLayer,
    BaseTuner,
    Capabilities,
    Merge,
    PeftConfig,
    TargetedConfig,
    adapter_layers,
)


class ScaleRegConfig(TargetedConfig):
    peft_type: Literal["SCALE_REG"] = "SCALE_REG"
    reg_weight: float = Field(default=0.1, ge=0.0, description="Weight of sum((g - 1)^2) in the loss.")
    max_change: float = Field(default=0.5, gt=0.0, description="After each step g stays within 1 +- max_change.")


class ScaleLayer(AdapterLayer):
    """``g`` (out,) per adapter on a ``nn.Linear``; ``last_step`` records ``on_step_end`` calls."""

    adapter_attribute_names = ("scale_g",)
    capabilities = Capabilities(mergeable=True)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.scale_g = nn.ParameterDict()
        self.last_step: dict[str, int] = {}

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        out_features = self.base_layer.get_parameter("weight").shape[0]
        self.scale_g[adapter_name] = nn.Parameter(torch.ones(out_features))

    def _product(self, names: Sequence[str]) -> Tensor:
        product = torch.ones_like(self.scale_g[names[0]])
        for name in names:
            product = product * self.scale_g[name]
        return product

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out: Tensor = self.base_layer(x, *args, **kwargs)
        return out * self._product(self.active_adapters) if self.use_adapters else out

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        g = self._product(adapter_names).detach().clone()  # the state: what the unmerge divides by
        return Merge(self._times(g), state=g)

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        return self._times(1 / (state if state is not None else self._product(adapter_names).detach()))

    def _times(self, g: Tensor) -> dict[str, Tensor]:
        values = {"weight": self.base_layer.get_parameter("weight") * g[:, None]}
        bias = getattr(self.base_layer, "bias", None)
        if isinstance(bias, Tensor):
            values["bias"] = bias * g
        return {name: value.detach() for name, value in values.items()}


class ScaleRegTuner(BaseTuner):
    name = "scale_reg"
    config_class = ScaleRegConfig

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        return ScaleLayer(target) if isinstance(target, nn.Linear) else None

    def _scales(self, model: AdaptedModel) -> list[tuple[ScaleLayer, str]]:
        return [
            (layer, name)
            for _, layer in adapter_layers(model.model)
            if isinstance(layer, ScaleLayer)
            for name in layer.active_adapters
        ]

    def adapter_loss(self, model: AdaptedModel, outputs: Any) -> Tensor | None:
        if not model.model.training:
            return None
        terms = [
            model.peft_config[name].reg_weight * (layer.scale_g[name] - 1).pow(2).sum()  # type: ignore[attr-defined]
            for layer, name in self._scales(model)
        ]
        return torch.stack(terms).sum() if terms else None

    def on_step_end(self, model: AdaptedModel, global_step: int) -> None:
        with torch.no_grad():
            for layer, name in self._scales(model):
                limit = model.peft_config[name].max_change  # type: ignore[attr-defined]
                layer.scale_g[name].clamp_(1 - limit, 1 + limit)
                layer.last_step[name] = global_step
