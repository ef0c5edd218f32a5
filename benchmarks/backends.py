"""The two libraries under test behind one face: their user APIs are the same by design."""

from __future__ import annotations

from dataclasses import dataclass
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
    prompt_tuning_config: Any = None
    prefix_tuning_config: Any = None


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
            PromptTuningConfig,
            PrefixTuningConfig,
        )
    if name == "hf":
        import peft

        return Backend(
            "hf",
            peft.get_peft_model,
            peft.PeftModel,
            peft.LoraConfig,
            peft.IA3Config,
            peft.__version__,
            peft.PromptTuningConfig,
            peft.PrefixTuningConfig,
        )
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
