"""peft-core: parameter-efficient fine-tuning with PEFT methods as plugins.

Config classes of installed plugins are importable from here too
(``from peft_core import LoraConfig`` works when peft-lora is installed).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from peft_core.api import get_peft_model, inject_adapter_in_model
from peft_core.checkpoint import DEFAULT_ADAPTER
from peft_core.config import PeftConfig
from peft_core.errors import (
    AdapterLoadError,
    AdapterSaveError,
    ConfigError,
    MergeError,
    PeftError,
    PluginConflictError,
    PluginError,
    TargetNotFoundError,
)
from peft_core.hookspecs import hookimpl, hookspec
from peft_core.hotswap import hotswap_adapter, hotswap_adapter_from_state_dict, prepare_for_hotswap
from peft_core.layer import BASE_ADAPTER, AdapterLayer, adapter_rows
from peft_core.modules_to_save import ModulesToSaveWrapper
from peft_core.peft_model import PeftModel
from peft_core.plugins import register, register_tuner, registry
from peft_core.state_dict import get_peft_model_state_dict, set_peft_model_state_dict
from peft_core.tuner import BaseTuner

try:
    __version__ = version("peft-core")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BASE_ADAPTER",
    "DEFAULT_ADAPTER",
    "AdapterLayer",
    "AdapterLoadError",
    "AdapterSaveError",
    "BaseTuner",
    "ConfigError",
    "MergeError",
    "ModulesToSaveWrapper",
    "PeftConfig",
    "PeftError",
    "PeftModel",
    "PluginConflictError",
    "PluginError",
    "TargetNotFoundError",
    "adapter_rows",
    "get_peft_model",
    "get_peft_model_state_dict",
    "hookimpl",
    "hookspec",
    "hotswap_adapter",
    "hotswap_adapter_from_state_dict",
    "inject_adapter_in_model",
    "prepare_for_hotswap",
    "register",
    "register_tuner",
    "registry",
    "set_peft_model_state_dict",
]


def __getattr__(name: str) -> Any:
    """Config classes of installed plugins, by class name (e.g. ``LoraConfig``)."""
    if name.endswith("Config") and not name.startswith("_"):
        for config_class in registry.config_classes().values():
            if config_class.__name__ == name:
                return config_class
    raise AttributeError(f"module 'peft_core' has no attribute {name!r}")
