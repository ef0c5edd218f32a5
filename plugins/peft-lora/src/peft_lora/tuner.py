"""``LoraTuner``: which layer wraps which module, per-module ranks, and trained biases."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn

from peft_core import AdapterLayer, BaseTuner, ConfigError, ModulesToSaveWrapper, PeftConfig, TargetNotFoundError
from peft_core.matching import describe_unmatched, matching_entry
from peft_lora.config import LoraConfig
from peft_lora.conv import Conv, is_supported_conv
from peft_lora.embedding import Embedding
from peft_lora.layer import Linear, LoraLayer


def _is_conv1d_transformers(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


class LoraTuner(BaseTuner):
    """LoRA for Linear, transformers Conv1D, Embedding and Conv1d/2d/3d (groups=1)."""

    name = "lora"
    config_class = LoraConfig

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        layer: LoraLayer
        if isinstance(target, nn.Linear):
            layer = Linear(target)
        elif _is_conv1d_transformers(target):
            layer = Linear(target, fan_in_fan_out=True)
        elif isinstance(target, nn.Embedding):
            layer = Embedding(target)
        elif is_supported_conv(target):
            layer = Conv(target)
        else:
            return None
        layer.add_adapter(adapter_name, config)
        return layer

    def resolve_config(self, config: PeftConfig, module_path: str) -> PeftConfig:
        assert isinstance(config, LoraConfig)
        update: dict[str, int | float] = {}
        rank_key = matching_entry(module_path, config.rank_pattern)
        if rank_key is not None:
            update["r"] = config.rank_pattern[rank_key]
        alpha_key = matching_entry(module_path, config.alpha_pattern)
        if alpha_key is not None:
            update["lora_alpha"] = config.alpha_pattern[alpha_key]
        return config.model_copy(update=update) if update else config

    def check_targets(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> None:
        assert isinstance(config, LoraConfig)
        for field in ("rank_pattern", "alpha_pattern"):
            keys = getattr(config, field)
            missing = [key for key in keys if not any(matching_entry(path, [key]) for path in targets)]
            if missing:
                raise TargetNotFoundError(describe_unmatched(field, missing, targets))
        uses_conv1d = any(_is_conv1d_transformers(_base(model.get_submodule(path))) for path in targets)
        if uses_conv1d and not config.fan_in_fan_out:
            warnings.warn("targets include transformers Conv1D layers: setting fan_in_fan_out=True", stacklevel=4)
            config.fan_in_fan_out = True
        elif not uses_conv1d and config.fan_in_fan_out:
            raise ConfigError(
                "fan_in_fan_out=True, but no target stores its weight as (in, out) (Conv1D); set it False"
            )

    def add_weighted_adapter(
        self,
        model: nn.Module,
        adapters: Sequence[str],
        weights: Sequence[float],
        adapter_name: str,
        combination_type: str,
        **options: Any,
    ) -> PeftConfig:
        """``linear``, ``cat`` (exact) or ``svd`` (``svd_rank=``): see ``peft_lora.weighted``."""
        from peft_lora.weighted import add_weighted_adapter

        return add_weighted_adapter(self, model, adapters, weights, adapter_name, combination_type, **options)

    def extra_trainable_parameters(self, model: nn.Module, config: PeftConfig) -> dict[str, nn.Parameter]:
        assert isinstance(config, LoraConfig)
        if config.bias == "none":
            return {}
        found: dict[str, nn.Parameter] = {}
        skip: list[str] = []
        for path, module in model.named_modules():
            if any(path.startswith(prefix) for prefix in skip):
                continue
            if isinstance(module, ModulesToSaveWrapper):
                skip.append(path + ".")  # saved whole, with the copy's own bias
            elif isinstance(module, LoraLayer):
                skip.append(path + ".")
                bias = getattr(module.base_layer, "bias", None)
                if isinstance(bias, nn.Parameter):
                    found[f"{path}.base_layer.bias" if path else "base_layer.bias"] = bias
            elif config.bias == "all" and isinstance(bias := module._parameters.get("bias"), nn.Parameter):
                found[f"{path}.bias" if path else "bias"] = bias
        return found


def _base(module: nn.Module) -> nn.Module:
    return module.base_layer if isinstance(module, AdapterLayer) else module
