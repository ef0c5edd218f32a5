"""The scenarios of the suite, in run order. Each runs in its own fresh process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.backends import BACKENDS
from benchmarks.context import Context, Result
from benchmarks.scenarios import (
    adalora,
    conversion,
    inference,
    initialisation,
    lifecycle,
    methods,
    mixed,
    prompt,
    structured,
    training,
    variants,
)


@dataclass(frozen=True)
class Scenario:
    run: Callable[[Context], Result]
    # Variants that each need a process of their own (peak memory is per process).
    isolated_variants: tuple[str, ...] = ()


SCENARIOS: dict[str, Scenario] = {
    "train_llama": Scenario(training.train_llama),
    "train_gpt2": Scenario(training.train_gpt2),
    "forward_llama": Scenario(inference.forward_llama),
    "forward_gpt2": Scenario(inference.forward_gpt2),
    "mixed_decode": Scenario(mixed.mixed_decode),
    "mixed_prefill": Scenario(mixed.mixed_prefill),
    "mixed_linear_stack": Scenario(mixed.mixed_linear_stack),
    **{name: Scenario(run, BACKENDS if isolated else ()) for name, (run, isolated) in lifecycle.SCENARIOS.items()},
    "peak_memory": Scenario(training.peak_memory, training.RSS_VARIANTS),
    **{name: Scenario(run) for name, run in methods.SCENARIOS.items()},
    # Methods with scenarios of their own (benchmarks.methods.DEDICATED), more detailed than a method_* row.
    "adalora_step": Scenario(adalora.adalora_step),
    "adalora_step_short": Scenario(adalora.adalora_step_short),
    "train_structured_llama": Scenario(structured.train_structured_llama),
    "train_structured_conv": Scenario(structured.train_structured_conv),
    "forward_structured": Scenario(structured.forward_structured),
    "dora_train": Scenario(variants.dora_train),
    "dora_forward": Scenario(variants.dora_forward),
    "qlora_train": Scenario(variants.qlora_train),
    "inject_init_large": Scenario(initialisation.inject_init_large),
    "pissa_init": Scenario(initialisation.pissa_init),
    "convert_to_lora": Scenario(conversion.convert_to_lora),
    "prompt_step": Scenario(prompt.prompt_step),
    "prefix_step": Scenario(prompt.prefix_step),
    "generate_cache": Scenario(prompt.generate_cache),
}
