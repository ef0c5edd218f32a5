"""The table: Hugging Face PEFT's public names -> peft-core's (``"module:attribute"``).

A key is a bare name (any ``peft`` module) or ``"peft.<module>.<name>"`` for one module.
Only names with a peft-core counterpart that a user would write are listed; everything
else stays unmapped on purpose (see README.md). A target that is not installed (a
plugin of another method, a name not written yet) counts as unmapped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

_CORE = (
    "PeftModel",
    "PeftConfig",
    "TaskType",
    "PeftError",
    "get_peft_model",
    "inject_adapter_in_model",
    "get_peft_model_state_dict",
    "set_peft_model_state_dict",
    "get_layer_status",
    "get_model_status",
    "get_base_model_state_dict",
    "set_base_model_state_dict",
    "load_peft_weights",
    "hotswap_adapter",
    "hotswap_adapter_from_state_dict",
    "prepare_model_for_compiled_hotswap",
    "ModulesToSaveWrapper",
    "TunerLayerStatus",
    "TunerModelStatus",
    # task-type wrappers and auto classes (peft-core names them as the incumbent does)
    "PeftModelForCausalLM",
    "PeftModelForSeq2SeqLM",
    "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification",
    "PeftModelForQuestionAnswering",
    "PeftModelForFeatureExtraction",
    "AutoPeftModel",
    "AutoPeftModelForCausalLM",
    "AutoPeftModelForSeq2SeqLM",
    "AutoPeftModelForSequenceClassification",
    "AutoPeftModelForTokenClassification",
    "AutoPeftModelForQuestionAnswering",
    "AutoPeftModelForFeatureExtraction",
    # config classes of other methods, when their plugin is installed
    "AdaLoraConfig",
    "LoHaConfig",
    "LoKrConfig",
    "OFTConfig",
    "BOFTConfig",
    "VeraConfig",
    "PromptTuningConfig",
    "PrefixTuningConfig",
    "PromptEncoderConfig",
    "LNTuningConfig",
)

NAMES: dict[str, str] = {name: f"peft_core:{name}" for name in _CORE}
NAMES.update(
    {
        "LoraConfig": "peft_lora:LoraConfig",
        "LoraLayer": "peft_lora:LoraLayer",
        "peft.tuners.lora.Linear": "peft_lora:Linear",
        "peft.tuners.lora.layer.Linear": "peft_lora:Linear",
        "peft.tuners.lora.Embedding": "peft_lora:Embedding",
        "peft.tuners.lora.layer.Embedding": "peft_lora:Embedding",
        "IA3Config": "peft_ia3:IA3Config",
        "IA3Layer": "peft_ia3:IA3Layer",
        "BaseTunerLayer": "peft_core.contract:AdapterLayer",
        "NoMatchingPeftModuleError": "peft_core:TargetNotFoundError",
        "INCLUDE_LINEAR_LAYERS_SHORTHAND": "peft_core.contract:ALL_LINEAR",
        "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING": "peft_lora.defaults:DEFAULT_TARGET_MODULES",
        "TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING": "peft_ia3.tuner:IA3Tuner.default_target_modules",
        "TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING": "peft_ia3.tuner:DEFAULT_FEEDFORWARD_MODULES",
    }
)

#: Submodule names of the incumbent, so that ``from peft.tuners import lora`` gives a module.
SUBMODULES = frozenset(
    {
        "tuners",
        "utils",
        "lora",
        "ia3",
        "layer",
        "model",
        "config",
        "tuners_utils",
        "import_utils",
        "mapping",
        "mapping_func",
        "peft_model",
        "other",
        "constants",
        "hotswap",
        "save_and_load",
        "integrations",
        "_buffer_dict",
    }
)


def _installed(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


def _transformers_at_least(minimum: str) -> bool:
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) >= Version(minimum)


def _infer_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


#: ``peft.import_utils`` / ``peft.utils`` probes of the test machine (not PEFT behaviour).
ENVIRONMENT_PROBES: dict[str, Any] = {
    "is_aqlm_available": _installed("aqlm"),
    "is_auto_awq_available": _installed("awq"),
    "is_eetq_available": _installed("eetq"),
    "is_gptqmodel_available": _installed("gptqmodel"),
    "is_hqq_available": _installed("hqq"),
    "is_optimum_available": _installed("optimum"),
    "is_torchao_available": _installed("torchao"),
    "is_bnb_available": _installed("bitsandbytes"),
    "is_bnb_4bit_available": _installed("bitsandbytes"),
    "is_diffusers_available": _installed("diffusers"),
    "is_xpu_available": lambda check_device=False: False,
    # booleans, as the incumbent has them
    "is_transformers_ge_v5": _transformers_at_least("5.0.0.dev0"),
    "is_transformers_ge_v5_1_0": _transformers_at_least("5.1.0"),
    "is_transformers_ge_v5_4_0": _transformers_at_least("5.4.0"),
    "is_transformers_ge_v5_6_0": _transformers_at_least("5.6.0.dev0"),
    "infer_device": _infer_device,
}
