"""The plugin contract: everything a PEFT method plugin imports from peft-core.

``__all__`` below is the whole surface; a plugin imports nothing else from the core
(besides the user API at ``peft_core``). A method is a ``BaseTuner`` subclass with a
config class (``PeftConfig``, or ``TargetedConfig`` for methods that wrap modules) and,
for module methods, ``AdapterLayer`` subclasses declaring their ``Capabilities``. It is
registered through pluggy hooks (``hookimpl``; specs in ``peft_core.contract.hookspecs``)
under the entry-point group ``peft_core.plugins``. docs/writing-a-tuner.md walks through one.
"""

from __future__ import annotations

from peft_core.contract.biases import trained_biases
from peft_core.contract.capabilities import Capabilities
from peft_core.contract.config import PeftConfig, TargetedConfig, TaskType, check_regex, is_neutral
from peft_core.contract.hookspecs import hookimpl, hookspec
from peft_core.contract.layer import (
    AdapterLayer,
    Merge,
    adapter_layers,
    add_deltas,
    plain_modules,
    weights_will_be_loaded,
)
from peft_core.contract.matching import (
    ALL_LINEAR,
    closest_names,
    describe_unmatched,
    is_conv1d,
    is_linear,
    layer_index,
    matches,
    matching_entry,
    output_head_names,
    unmatched_entries,
)
from peft_core.contract.rows import BASE_ADAPTER, RowRouting
from peft_core.contract.stacks import StackCache, compiling, identities, records_grad
from peft_core.contract.tuner import MODEL_PREFIX, AdaptedModel, BaseTuner, base_of, with_fan_in_fan_out
from peft_core.errors import (
    AdapterLoadError,
    AdapterSaveError,
    ConfigError,
    MergeError,
    PeftError,
    PluginError,
    TargetNotFoundError,
    UnknownFieldError,
)

__all__ = [
    "ALL_LINEAR",
    "BASE_ADAPTER",
    "MODEL_PREFIX",
    "AdaptedModel",
    "AdapterLayer",
    "AdapterLoadError",
    "AdapterSaveError",
    "BaseTuner",
    "Capabilities",
    "ConfigError",
    "Merge",
    "MergeError",
    "PeftConfig",
    "PeftError",
    "PluginError",
    "RowRouting",
    "StackCache",
    "TargetNotFoundError",
    "TargetedConfig",
    "TaskType",
    "UnknownFieldError",
    "adapter_layers",
    "add_deltas",
    "base_of",
    "check_regex",
    "closest_names",
    "compiling",
    "describe_unmatched",
    "hookimpl",
    "hookspec",
    "identities",
    "is_conv1d",
    "is_linear",
    "is_neutral",
    "layer_index",
    "matches",
    "matching_entry",
    "output_head_names",
    "plain_modules",
    "records_grad",
    "trained_biases",
    "unmatched_entries",
    "weights_will_be_loaded",
    "with_fan_in_fan_out",
]
