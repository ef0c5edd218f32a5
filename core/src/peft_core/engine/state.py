"""Which adapters a model holds and which are in use.

The prepared config of each adapter is stored once, in the ``peft_config`` dict on the
adapted model (where Hugging Face PEFT keeps it too); saving and inspecting read it
there, never a layer's per-module copy. Active and disabled state live in the layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import adapter_layers
from peft_core.engine.targeting import set_submodule
from peft_core.errors import PeftError

CONFIGS_ATTRIBUTE = "peft_config"


def model_configs(model: nn.Module) -> dict[str, PeftConfig]:
    """The prepared config of every adapter of ``model``, by name (empty: no adapters)."""
    configs = model.__dict__.get(CONFIGS_ATTRIBUTE)
    if isinstance(configs, dict) and all(isinstance(c, PeftConfig) for c in configs.values()):
        return configs
    return {}


def store_config(model: nn.Module, adapter_name: str, config: PeftConfig) -> None:
    """Record ``config`` as the one stored config of ``adapter_name``."""
    configs = model_configs(model)
    if CONFIGS_ATTRIBUTE not in model.__dict__ or not configs:
        configs = {}
        model.__dict__[CONFIGS_ATTRIBUTE] = configs
    configs[adapter_name] = config


def adapter_config(model: nn.Module, adapter_name: str) -> PeftConfig:
    """The stored config of ``adapter_name``; ``PeftError`` naming the known ones otherwise."""
    configs = model_configs(model)
    if adapter_name not in configs:
        raise PeftError(f"the model has no adapter {adapter_name!r}; it has {sorted(configs)}")
    return configs[adapter_name]


def active_adapter_names(model: nn.Module) -> list[str]:
    """The model-wide active list (empty when the model holds no adapter layer)."""
    return next((list(layer.requested_adapters) for _, layer in adapter_layers(model)), [])


def set_active_adapters(model: nn.Module, adapter_names: Sequence[str]) -> None:
    """Make exactly these adapters active in every layer; trainability is not touched."""
    for _, layer in adapter_layers(model):
        layer.set_active_adapters(adapter_names)


def set_disabled(model: nn.Module, disabled: bool) -> None:
    """Switch every adapter layer off (base outputs) or back on."""
    for _, layer in adapter_layers(model):
        layer.disabled = disabled


def delete_adapter(model: nn.Module, adapter_name: str) -> None:
    """Remove an adapter from every layer and the stored configs; empty layers are unwrapped."""
    for path, layer in list(adapter_layers(model)):
        if adapter_name in layer.adapter_configs or not layer.adapter_configs:
            layer.delete_adapter(adapter_name)
            if not layer.adapter_configs:
                set_submodule(model, path, layer.base_layer)
    configs = model_configs(model)
    configs.pop(adapter_name, None)
    if not configs:
        model.__dict__.pop(CONFIGS_ATTRIBUTE, None)
