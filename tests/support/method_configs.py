"""A small config of every PEFT method, for the tests that run each installed method the same way.

The distributed tests train every installed tuner across 2 processes (DDP, DeepSpeed
ZeRO-2/3, FSDP2 through accelerate) with the entry here, and a tuner without an entry
fails ``test_every_installed_method_has_a_test_config``: a new method cannot skip them.

A new method plugin adds one line to ``METHOD_CONFIGS``: the ``peft_type``, the model it
fits (``"mlp"``: ``support.models.MLP`` with modules ``emb``, ``lin0``, ``lin1``,
``head``; ``"llama"``: ``tiny_llama``, for methods that need a transformers model) and
the config's fields. The config class comes from the registry, so an entry imports
nothing and entries of methods that are not installed are not used. Give a small
adapter whose every tensor receives a gradient within a few steps. ``known_failures``
maps an engine (``"ddp"``, ``"zero2"``, ``"zero3"``, ``"accelerate-zero2"``,
``"accelerate-zero3"``, ``"accelerate-fsdp2"``) to the reason a method does not work
there yet; those tests are expected to fail (strict xfail), and pass again once removed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from peft_core import PeftConfig
from peft_core.registry import registry


@dataclass(frozen=True)
class MethodConfig:
    peft_type: str
    model: Literal["mlp", "llama"]
    fields: Mapping[str, Any]
    known_failures: Mapping[str, str] = field(default_factory=dict)
    # Checkpoint-key suffixes that move little in the sweeps' few steps, with the reason.
    slow_tensors: Mapping[str, str] = field(default_factory=dict)
    # A plugin that extends the tuner (a LoRA variant), by import name: the entry runs when it is installed.
    requires: str | None = None


METHOD_CONFIGS: dict[str, MethodConfig] = {
    "lora": MethodConfig(
        "LORA", "mlp", {"r": 4, "lora_alpha": 8, "target_modules": ["emb", "lin0", "lin1"], "modules_to_save": ["head"]}
    ),
    "dora": MethodConfig(
        "LORA",
        "mlp",
        {"r": 4, "lora_alpha": 8, "target_modules": ["lin0", "lin1"], "use_dora": True, "init_lora_weights": False},
        requires="peft_dora",
    ),
    "ia3": MethodConfig(
        "IA3",
        "mlp",
        {
            "target_modules": ["lin0", "lin1"],
            "feedforward_modules": ["lin1"],
            "modules_to_save": ["head"],
            "init_ia3_weights": False,
        },
    ),
    "adalora": MethodConfig(
        "ADALORA",
        "mlp",
        {
            "target_modules": ["lin0", "lin1"],
            "init_r": 4,
            "target_r": 2,
            "total_step": 20,
            "tinit": 2,  # two steps of importance before masking: lin0 keeps 4 ranks, lin1 3 (ties prune all)
            "tfinal": 2,
        },
        known_failures={
            **dict.fromkeys(
                ("zero2", "zero3", "accelerate-zero2", "accelerate-zero3"),
                "AdaLoRA scores ranks by the gradients, which ZeRO keeps partitioned and clears in engine.step()",
            ),
            "accelerate-fsdp2": "AdaLoRA's allocation does not read FSDP2's sharded (DTensor) gradients yet",
        },
        slow_tensors=dict.fromkeys(
            ("lora_A", "lora_B"), "E starts at zero: A's and B's gradients go through E, ~1e-7 in 4 steps"
        ),
    ),
    "loha": MethodConfig("LOHA", "mlp", {"target_modules": ["lin0", "lin1"], "r": 4, "init_weights": False}),
    "lokr": MethodConfig("LOKR", "mlp", {"target_modules": ["lin0", "lin1"], "r": 4, "init_weights": False}),
    "oft": MethodConfig(
        "OFT", "mlp", {"target_modules": ["lin0", "lin1"], "r": 0, "oft_block_size": 4, "init_weights": False}
    ),
    # Test-only plugins (tests/plugins/): a bias delta; a scale with a loss term and an on_step_end
    # projection (max_change is small so that the projection acts); a model-level input shift.
    "bitfit": MethodConfig("BITFIT", "mlp", {"target_modules": ["lin0", "lin1"], "init_scale": 0.1}),
    "scale_reg": MethodConfig("SCALE_REG", "mlp", {"target_modules": ["lin0", "lin1"], "max_change": 0.002}),
    "input_shift": MethodConfig("INPUT_SHIFT", "llama", {}),
    # Prompt learning: virtual tokens before the input, from an MLP encoder, or as a KV-cache prefix.
    "prompt_tuning": MethodConfig("PROMPT_TUNING", "llama", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4}),
    "p_tuning": MethodConfig(
        "P_TUNING", "llama", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "encoder_hidden_size": 16}
    ),
    "prefix_tuning": MethodConfig("PREFIX_TUNING", "llama", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4}),
}


def installed_peft_types() -> list[str]:
    """The ``peft_type`` of every installed tuner, sorted."""
    return sorted(registry.config_classes())


def installed_methods() -> list[str]:
    """Names of the entries whose tuner is installed, in ``METHOD_CONFIGS`` order."""
    installed = set(installed_peft_types())
    return [
        name
        for name, entry in METHOD_CONFIGS.items()
        if entry.peft_type in installed and (entry.requires is None or importlib.util.find_spec(entry.requires))
    ]


def uncovered_peft_types() -> list[str]:
    """Installed ``peft_type`` values that no entry covers."""
    covered = {entry.peft_type for entry in METHOD_CONFIGS.values()}
    return [peft_type for peft_type in installed_peft_types() if peft_type not in covered]


def method_config(name: str) -> PeftConfig:
    """The config of entry ``name``, built by the installed tuner's config class."""
    entry = METHOD_CONFIGS[name]
    return registry.tuner_for_peft_type(entry.peft_type).config_class(**entry.fields)
