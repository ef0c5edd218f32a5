"""The entry point of peft-oft (group ``peft_core.plugins``, name ``oft``) and its tuner."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.resources import files

from torch import nn

from peft_core.contract import (
    AdapterLayer,
    BaseTuner,
    ConfigError,
    PeftConfig,
    hookimpl,
    with_fan_in_fan_out,
)
from peft_oft.config import OFTConfig
from peft_oft.layer import Conv2d, Embedding, Linear, OFTLayer, PatchConv2d


class OFTTuner(BaseTuner):
    """OFT for nn.Linear, nn.Conv2d and nn.Embedding."""

    name = "oft"
    prefix = "oft_"
    config_class = OFTConfig
    default_target_modules = json.loads(files("peft_oft").joinpath("default_targets.json").read_text("utf-8"))

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        return with_fan_in_fan_out(model, config, targets)

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        if isinstance(target, nn.Linear):
            return Linear(target)
        if isinstance(target, nn.Embedding):
            return Embedding(target)
        if not isinstance(target, nn.Conv2d):
            return None
        kernel = tuple(target.kernel_size)
        if kernel[0] != kernel[1] or target.dilation[0] > 1:
            raise ConfigError(
                f"OFT supports Conv2d with square kernels and dilation 1 (as Hugging Face PEFT); this one has "
                f"kernel_size={kernel}, dilation={tuple(target.dilation)}: leave it out of target_modules"
            )
        return Conv2d(target) if kernel == (1, 1) and target.groups == 1 else PatchConv2d(target)

    def extra_trainable_parameters(self, model: nn.Module, config: PeftConfig) -> dict[str, nn.Parameter]:
        """``bias="oft_only"``: the biases of adapted layers; ``"all"``: every bias outside other adapter layers."""
        assert isinstance(config, OFTConfig)
        found: dict[str, nn.Parameter] = {}
        if config.bias == "none":
            return found
        owned: list[str] = []  # adapter layers' paths: their insides are theirs
        for path, module in model.named_modules():
            if any(path.startswith(prefix) for prefix in owned):
                continue
            if isinstance(module, AdapterLayer):
                owned.append(f"{path}.")
                bias = getattr(module.base_layer, "bias", None) if isinstance(module, OFTLayer) else None
                if isinstance(bias, nn.Parameter):
                    found[f"{path}.base_layer.bias"] = bias
            elif config.bias == "all" and isinstance(bias := module._parameters.get("bias"), nn.Parameter):
                found[f"{path}.bias" if path else "bias"] = bias
        return found


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [OFTTuner]
