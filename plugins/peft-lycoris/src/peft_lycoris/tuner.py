"""``LycorisTuner``: which layer wraps which module, and the per-module ranks and alphas."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.resources import files
from typing import ClassVar

from torch import nn

from peft_core.contract import (
    AdapterLayer,
    BaseTuner,
    PeftConfig,
    TargetNotFoundError,
    describe_unmatched,
    matching_entry,
)
from peft_lycoris.layer import LycorisLayer


def default_targets(package: str) -> dict[str, list[str]]:
    """``default_targets.json`` of ``package``: Hugging Face PEFT's table by transformers ``model_type``."""
    table: dict[str, list[str]] = json.loads(files(package).joinpath("default_targets.json").read_text("utf-8"))
    return table


class LycorisTuner(BaseTuner):
    """A LyCORIS method: ``layer_class`` on nn.Linear, nn.Conv1d and nn.Conv2d targets."""

    layer_class: ClassVar[type[LycorisLayer]]

    #: Per-module overrides: config field of the pattern -> the field it replaces.
    patterns: ClassVar[dict[str, str]] = {"rank_pattern": "r", "alpha_pattern": "alpha"}

    def prepare_config(self, model: nn.Module, config: PeftConfig, targets: Sequence[str]) -> PeftConfig:
        for pattern in self.patterns:
            keys = getattr(config, pattern)
            missing = [key for key in keys if not any(matching_entry(path, [key]) for path in targets)]
            if missing:
                raise TargetNotFoundError(describe_unmatched(pattern, missing, targets))
        return config

    def resolve_config(self, config: PeftConfig, module_path: str) -> PeftConfig:
        update = {}
        for pattern, field in self.patterns.items():
            values = getattr(config, pattern)
            key = matching_entry(module_path, values)
            if key is not None:
                update[field] = values[key]
        return config.model_copy(update=update) if update else config

    def create_layer(self, target: nn.Module, adapter_name: str, config: PeftConfig) -> AdapterLayer | None:
        if isinstance(target, nn.Linear | nn.Conv1d | nn.Conv2d) and target.weight.is_floating_point():
            return self.layer_class(target)
        return None
