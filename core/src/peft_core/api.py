"""Entry points: ``get_peft_model`` and the in-place ``inject_adapter_in_model``."""

from __future__ import annotations

from torch import nn

from peft_core.checkpoint import DEFAULT_ADAPTER
from peft_core.config import PeftConfig
from peft_core.peft_model import PeftModel
from peft_core.plugins import registry


def get_peft_model(
    model: nn.Module,
    peft_config: PeftConfig,
    adapter_name: str = DEFAULT_ADAPTER,
    autocast_adapter_dtype: bool = True,
) -> PeftModel:
    """Wrap ``model`` with a new trainable adapter; the base parameters are frozen.

    The tuner is chosen by the config's type among installed plugins.
    """
    return PeftModel(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)


def inject_adapter_in_model(
    peft_config: PeftConfig,
    model: nn.Module,
    adapter_name: str = DEFAULT_ADAPTER,
    autocast_adapter_dtype: bool = True,
) -> nn.Module:
    """Add an adapter to any ``nn.Module`` in place (no wrapper) and freeze the rest; returns it."""
    tuner = registry.tuner_for_config(peft_config)()
    tuner.inject(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
    return model
