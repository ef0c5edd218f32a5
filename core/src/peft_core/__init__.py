"""peft-core: parameter-efficient fine-tuning with PEFT methods as plugins.

The user API, named as in Hugging Face PEFT. Config classes of installed plugins are
importable from here too (``from peft_core import LoraConfig`` works when peft-lora is
installed). Plugin authors import from ``peft_core.contract``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from peft_core import registry
from peft_core.api.auto import (
    AutoPeftModel,
    AutoPeftModelForCausalLM,
    AutoPeftModelForFeatureExtraction,
    AutoPeftModelForQuestionAnswering,
    AutoPeftModelForSeq2SeqLM,
    AutoPeftModelForSequenceClassification,
    AutoPeftModelForTokenClassification,
)
from peft_core.api.base_state import get_base_model_state_dict, set_base_model_state_dict
from peft_core.api.checkpointing import load_peft_weights
from peft_core.api.functions import get_peft_model, hotswap_adapter, inject_adapter_in_model
from peft_core.api.peft_model import PeftModel
from peft_core.api.status import TunerLayerStatus, TunerModelStatus, get_layer_status, get_model_status
from peft_core.api.task_models import (
    MODEL_TYPE_TO_PEFT_MODEL_MAPPING,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
)
from peft_core.contract.config import PeftConfig, TaskType
from peft_core.contract.hookspecs import hookimpl, hookspec
from peft_core.contract.rows import BASE_ADAPTER
from peft_core.engine import ModulesToSaveWrapper, adapter_rows, hotswap_adapter_from_state_dict, prepare_for_hotswap
from peft_core.errors import (
    AdapterLoadError,
    AdapterNotFoundError,
    AdapterSaveError,
    ConfigError,
    MergeError,
    PeftError,
    PluginConflictError,
    PluginError,
    PluginNotInstalledError,
    TargetNotFoundError,
    UnknownFieldError,
)
from peft_core.io.loading import DEFAULT_ADAPTER, get_peft_model_state_dict, set_peft_model_state_dict
from peft_core.registry import DISTRIBUTIONS, register, register_tuner

try:
    __version__ = version("peft-core")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BASE_ADAPTER",
    "DEFAULT_ADAPTER",
    "MODEL_TYPE_TO_PEFT_MODEL_MAPPING",
    "AdapterLoadError",
    "AdapterNotFoundError",
    "AdapterSaveError",
    "AutoPeftModel",
    "AutoPeftModelForCausalLM",
    "AutoPeftModelForFeatureExtraction",
    "AutoPeftModelForQuestionAnswering",
    "AutoPeftModelForSeq2SeqLM",
    "AutoPeftModelForSequenceClassification",
    "AutoPeftModelForTokenClassification",
    "ConfigError",
    "MergeError",
    "ModulesToSaveWrapper",
    "PeftConfig",
    "PeftError",
    "PeftModel",
    "PeftModelForCausalLM",
    "PeftModelForFeatureExtraction",
    "PeftModelForQuestionAnswering",
    "PeftModelForSeq2SeqLM",
    "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification",
    "PluginConflictError",
    "PluginError",
    "PluginNotInstalledError",
    "TargetNotFoundError",
    "TaskType",
    "TunerLayerStatus",
    "TunerModelStatus",
    "UnknownFieldError",
    "adapter_rows",
    "get_base_model_state_dict",
    "get_layer_status",
    "get_model_status",
    "get_peft_model",
    "get_peft_model_state_dict",
    "hookimpl",
    "hookspec",
    "hotswap_adapter",
    "hotswap_adapter_from_state_dict",
    "inject_adapter_in_model",
    "load_peft_weights",
    "prepare_for_hotswap",
    "prepare_model_for_compiled_hotswap",
    "register",
    "register_tuner",
    "registry",
    "set_base_model_state_dict",
    "set_peft_model_state_dict",
]

#: Hugging Face PEFT's name for ``prepare_for_hotswap``.
prepare_model_for_compiled_hotswap = prepare_for_hotswap


def __getattr__(name: str) -> Any:
    """Config classes of installed plugins, by class name (e.g. ``LoraConfig``)."""
    if name.endswith("Config") and not name.startswith("_"):
        for config_class in registry.registry.config_classes().values():
            if config_class.__name__ == name:
                return config_class
        for distribution, class_name in DISTRIBUTIONS.values():
            if class_name == name:
                raise PluginNotInstalledError(
                    f"{name} comes with the {distribution} plugin, which is not installed: pip install {distribution}"
                )
    raise AttributeError(f"module 'peft_core' has no attribute {name!r}")
