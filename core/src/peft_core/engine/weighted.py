"""``add_weighted_adapter``: a new adapter from a weighted combination of others.

The tuner does the math (``BaseTuner.weighted_adapter`` returns the new config and
tensors); the engine checks that every layer involved declares ``weighted``, adds the
adapter and copies the tensors in, all or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import adapter_layers
from peft_core.engine.modules_to_save import ModulesToSaveWrapper
from peft_core.engine.tuned_model import TunedModel
from peft_core.errors import PeftError


def add_weighted_adapter(
    tuned: TunedModel,
    adapters: Sequence[str],
    weights: Sequence[float],
    adapter_name: str,
    combination_type: str | None,
    autocast_adapter_dtype: bool = True,
    **options: Any,
) -> PeftConfig:
    """Add ``adapter_name`` combining ``adapters``; returns its stored config (not made active)."""
    adapters, weights = list(adapters), [float(w) for w in weights]
    known = tuned.peft_config
    unknown = [n for n in adapters if n not in known]
    if not adapters or unknown or len(weights) != len(adapters):
        raise PeftError(
            f"add_weighted_adapter needs known adapters and one weight each; got adapters={adapters} "
            f"(unknown: {unknown}, this model has {list(known)}) and {len(weights)} weights"
        )
    if adapter_name in known:
        raise PeftError(f"adapter {adapter_name!r} already exists; delete_adapter() it first or pick another name")
    refusing = sorted(
        {
            type(layer).__name__
            for _, layer in adapter_layers(tuned.model)
            if set(adapters) & set(layer.adapter_configs)
            and not type(layer).capabilities.weighted
            and not isinstance(layer, ModulesToSaveWrapper)  # copies: the tuner decides about them
        }
    )
    if refusing or (tuned.adapter_modules and not type(tuned.tuner).capabilities.weighted):
        what = ", ".join(refusing) or f"{tuned.tuner.name}'s model-level adapter"
        raise PeftError(
            f"adapters of {what} cannot be combined with add_weighted_adapter (capabilities.weighted is not declared)"
        )
    config, tensors = tuned.tuner.weighted_adapter(tuned, adapters, weights, combination_type, **options)
    prepared = tuned.inject_adapter(config, adapter_name, autocast_adapter_dtype, loading=True)
    try:
        live = tuned.adapter_state_dict(adapter_name)
        if set(live) != set(tensors) or any(live[k].shape != tensors[k].shape for k in live):
            raise PeftError(
                f"{type(tuned.tuner).__name__}.weighted_adapter returned tensors that do not fit its config: "
                f"{sorted(set(live) ^ set(tensors))[:5]} or shapes differ"
            )
        with torch.no_grad():
            for key, tensor in tensors.items():
                live[key].copy_(tensor)
    except BaseException:
        tuned.delete_adapter(adapter_name)
        raise
    return prepared
