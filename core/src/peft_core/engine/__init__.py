"""The engine: injection, adapter state, transactional merges, per-row routing, hotswap.

It drives plugins through the contract (``BaseTuner``, ``AdapterLayer``) and reaches
plugins only through the registry.
"""

from __future__ import annotations

from peft_core.engine.hotswap import hotswap_adapter_from_state_dict, prepare_for_hotswap
from peft_core.engine.injection import inject
from peft_core.engine.modules_to_save import ModulesToSaveWrapper
from peft_core.engine.rows import adapter_rows
from peft_core.engine.state import adapter_config, model_configs
from peft_core.engine.targeting import validate_adapter_name
from peft_core.engine.tuned_model import TunedModel, refuse_adapted, unwrap_model, view_of
from peft_core.engine.weighted import add_weighted_adapter

__all__ = [
    "ModulesToSaveWrapper",
    "TunedModel",
    "adapter_config",
    "adapter_rows",
    "add_weighted_adapter",
    "hotswap_adapter_from_state_dict",
    "inject",
    "model_configs",
    "prepare_for_hotswap",
    "refuse_adapted",
    "unwrap_model",
    "validate_adapter_name",
    "view_of",
]
