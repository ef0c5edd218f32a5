"""``IA3Tuner``: IA3 layers for Linear, Conv1D and ConvNd targets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from torch import Tensor, nn

from peft_core.contract import (
    AdaptedModel,
    AdapterLayer,
    BaseTuner,
    ConfigError,
    PeftConfig,
    TargetNotFoundError,
    describe_unmatched,
    is_conv1d,
    matches,
    unmatched_entries,
    with_fan_in_fan_out,
)
from peft_ia3.config import IA3Config
from peft_ia3.layer import IA3Layer
from peft_ia3.weighted import weighted_adapter


def _table(name: str) -> dict[str, list[str]]:
    """A table of Hugging Face PEFT's defaults by transformers ``model_type`` (package data)."""
    table: dict[str, list[str]] = json.loads(files("peft_ia3").joinpath(name).read_text(encoding="utf-8"))
    return table


DEFAULT_FEEDFORWARD_MODULES = _table("default_feedforward.json")


class IA3Tuner(BaseTuner):
    """IA3 for nn.Linear, transformers Conv1D and nn.Conv1d/2d/3d."""

    name = "ia3"
    prefix = "ia3_"
    config_class = IA3Config
    default_target_modules = _table("default_targets.json")

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        if isinstance(target, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            return IA3Layer(target)
        if is_conv1d(target):
            return IA3Layer(target, fan_in_fan_out=True)
        return None

    def resolve_config(self, config: PeftConfig, module_path: str) -> PeftConfig:
        # Narrow feedforward_modules to this module: [path] if its input is scaled, else [].
        assert isinstance(config, IA3Config)
        feedforward = matches(module_path, config.feedforward_modules)
        return config.model_copy(update={"feedforward_modules": [module_path] if feedforward else []})

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        assert isinstance(config, IA3Config)
        if config.feedforward_modules is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            defaults = DEFAULT_FEEDFORWARD_MODULES.get(str(model_type))
            if defaults is not None:  # as Hugging Face PEFT: the architecture's table, kept to the targets
                kept = [entry for entry in defaults if any(matches(path, [entry]) for path in targets)]
                config = config.model_copy(update={"feedforward_modules": kept})
        if config.feedforward_modules:
            paths = [path for path, _ in model.named_modules() if path]
            missing = unmatched_entries(config.feedforward_modules, paths)
            if missing:
                raise TargetNotFoundError(describe_unmatched("feedforward_modules", missing, paths))
            outside = [p for p in paths if matches(p, config.feedforward_modules) and p not in targets]
            outside = [p for p in outside if not any(p.startswith(t + ".") for t in targets)]
            if outside:
                raise ConfigError(
                    f"feedforward_modules must be a subset of the targets; these match but are not targets: {outside}"
                )
        return with_fan_in_fan_out(model, config, targets)

    def weighted_adapter(
        self,
        model: AdaptedModel,
        adapters: Sequence[str],
        weights: Sequence[float],
        combination_type: str | None,
        **options: Any,
    ) -> tuple[PeftConfig, dict[str, Tensor]]:
        """The weighted sum of the adapters' vectors (Hugging Face PEFT's): see ``peft_ia3.weighted``."""
        if options:
            raise ConfigError(f"add_weighted_adapter takes no options for IA3, got {sorted(options)}")
        return weighted_adapter(model, adapters, weights, combination_type)
