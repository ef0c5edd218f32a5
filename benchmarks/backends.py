"""The two libraries under test behind one face: their user APIs are the same by design."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

BACKENDS = ("ours", "hf")


@dataclass(frozen=True)
class Backend:
    """Entry points of one PEFT library."""

    name: str
    get_peft_model: Any
    peft_model_class: Any
    lora_config: Any
    ia3_config: Any
    version: str
    module: ModuleType  # ``peft_core`` or ``peft``: config classes by Hugging Face PEFT's names
    hotswap_adapter: Any  # (model, adapter directory, adapter name) -> None
    prompt_tuning_config: Any
    prefix_tuning_config: Any

    def config_class(self, class_name: str) -> Any:
        """A config class by Hugging Face PEFT's name (``"LoHaConfig"``): its own, or peft-core's plugin's."""
        if self.name == "ours":
            import peft_core

            return getattr(peft_core, class_name)
        import peft

        return getattr(peft, class_name)


def load_backend(name: str) -> Backend:
    """``ours`` is peft-core with its LoRA/IA3 plugins; ``hf`` is Hugging Face PEFT."""
    if name == "ours":
        import peft_core
        from peft_ia3 import IA3Config
        from peft_lora import LoraConfig
        from peft_prefix_tuning import PrefixTuningConfig
        from peft_prompt_tuning import PromptTuningConfig

        return Backend(
            "ours",
            peft_core.get_peft_model,
            peft_core.PeftModel,
            LoraConfig,
            IA3Config,
            peft_core.__version__,
            peft_core,
            peft_core.hotswap_adapter,
            PromptTuningConfig,
            PrefixTuningConfig,
        )
    if name == "hf":
        import peft
        from peft.utils.hotswap import hotswap_adapter

        return Backend(
            "hf",
            peft.get_peft_model,
            peft.PeftModel,
            peft.LoraConfig,
            peft.IA3Config,
            peft.__version__,
            peft,
            hotswap_adapter,
            peft.PromptTuningConfig,
            peft.PrefixTuningConfig,
        )
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
