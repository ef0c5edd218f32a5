"""Plugin discovery and hook dispatch: the one ``registry`` of installed tuners and hooks.

The module stands for the registry: ``peft_core.registry.get_tuner("lora")``,
``peft_core.registry.plugins()`` and every other attribute of ``registry`` are read
from it.
"""

from __future__ import annotations

from typing import Any

from peft_core.registry.catalogue import DISTRIBUTIONS, PluginInfo, install_hint
from peft_core.registry.manager import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    STRICT_ENV,
    PluginRegistry,
    register,
    register_tuner,
    registry,
)

__all__ = [
    "DISABLE_ENV",
    "DISTRIBUTIONS",
    "ENTRY_POINT_GROUP",
    "STRICT_ENV",
    "PluginInfo",
    "PluginRegistry",
    "install_hint",
    "register",
    "register_tuner",
    "registry",
]


def __getattr__(name: str) -> Any:
    return getattr(registry, name)
