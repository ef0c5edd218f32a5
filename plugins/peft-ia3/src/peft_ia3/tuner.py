"""``IA3Tuner``: IA3 layers for Linear, Conv1D and ConvNd targets."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import nn

from peft_core import AdapterLayer, BaseTuner, ConfigError, PeftConfig, TargetNotFoundError
from peft_core.matching import describe_unmatched, matches, unmatched_entries
from peft_core.tuner import plain_modules
from peft_ia3.config import IA3Config
from peft_ia3.layer import IA3Layer


def _is_conv1d_transformers(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def _base(module: nn.Module) -> nn.Module:
    return module.base_layer if isinstance(module, AdapterLayer) else module


class IA3Tuner(BaseTuner):
    """IA3 for nn.Linear, transformers Conv1D and nn.Conv1d/2d/3d."""

    name = "ia3"
    config_class = IA3Config

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        if isinstance(target, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            layer = IA3Layer(target)
        elif _is_conv1d_transformers(target):
            layer = IA3Layer(target, fan_in_fan_out=True)
        else:
            return None
        layer.add_adapter(adapter_name, config)
        return layer

    def resolve_config(self, config: PeftConfig, module_path: str) -> PeftConfig:
        # Narrow feedforward_modules to this module: [path] if its input is scaled, else [].
        assert isinstance(config, IA3Config)
        feedforward = matches(module_path, config.feedforward_modules)
        return config.model_copy(update={"feedforward_modules": [module_path] if feedforward else []})

    def check_targets(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> None:
        assert isinstance(config, IA3Config)
        if config.feedforward_modules:
            paths = [path for path, _ in plain_modules(model)]
            missing = unmatched_entries(config.feedforward_modules, paths)
            if missing:
                raise TargetNotFoundError(describe_unmatched("feedforward_modules", missing, paths))
            outside = [p for p in paths if matches(p, config.feedforward_modules) and p not in targets]
            if outside:
                raise ConfigError(
                    f"feedforward_modules must be a subset of the targets; these match but are not targets: {outside}"
                )
        uses_conv1d = any(_is_conv1d_transformers(_base(model.get_submodule(path))) for path in targets)
        if uses_conv1d and not config.fan_in_fan_out:
            warnings.warn("targets include transformers Conv1D layers: setting fan_in_fan_out=True", stacklevel=4)
            config.fan_in_fan_out = True
        elif not uses_conv1d and config.fan_in_fan_out:
            raise ConfigError(
                "fan_in_fan_out=True, but no target stores its weight as (in, out) (Conv1D); set it False"
            )
