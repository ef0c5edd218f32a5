"""Per-method rows: a training step and an unmerged forward of each PEFT method, ours vs the incumbent.

A method gets its rows from one line in ``METHODS``: the config class name (the same in
both libraries: peft-core exposes every plugin's config under Hugging Face PEFT's class
name) and the keyword arguments. When the two libraries spell a setting differently, give
``hf_kwargs`` (merged over ``kwargs`` for the incumbent only). Each method becomes one
scenario, ``method_<name>``, in its own process, with four ratio rows (training step ours
/ HF and ours / floor, unmerged forward ours / HF and ours / base). LoRA's own, more
detailed rows are the ``train_*``/``forward_*`` scenarios.

    MethodCase("vera", "VeraConfig", dict(r=256, target_modules=["q_proj", "v_proj"])),
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
CAUSAL_LM = "CAUSAL_LM"


@dataclass(frozen=True)
class MethodCase:
    """One row group: ``config`` is the class name in ``peft_core`` and in ``peft``."""

    name: str  # scenario ``method_<name>``, and the label in the ratio rows
    config: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    hf_kwargs: dict[str, Any] = field(default_factory=dict)  # only for the incumbent, over ``kwargs``
    model: str = "llama"  # a builder in benchmarks.models (quick mode shrinks it)
    label: str = ""  # shown in the rows; default: ``name``

    @property
    def title(self) -> str:
        return self.label or self.name

    def settings(self, backend: str) -> dict[str, Any]:
        return self.kwargs | (self.hf_kwargs if backend == "hf" else {})


METHODS: list[MethodCase] = [
    MethodCase(
        "ia3",
        "IA3Config",
        dict(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]),
        label="IA3",
    ),
    MethodCase(
        "p_tuning",
        "PromptEncoderConfig",
        dict(task_type=CAUSAL_LM, num_virtual_tokens=20, encoder_hidden_size=64),
        label="p-tuning",
    ),
]

# Methods whose rows come from scenarios of their own (more variants than a method_* row:
# AdaLoRA's allocation, the structured methods on a ConvNet too); config class -> scenario.
DEDICATED: dict[str, str] = {
    "AdaLoraConfig": "adalora_step",
    "LoHaConfig": "train_structured_llama",
    "LoKrConfig": "train_structured_llama",
    "OFTConfig": "train_structured_llama",
    "PromptTuningConfig": "prompt_step",
    "PrefixTuningConfig": "prefix_step",
}
