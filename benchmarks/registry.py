"""The scenarios of the suite, in run order. Each runs in its own fresh process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.context import Context, Result
from benchmarks.scenarios import adalora, inference, lifecycle, mixed, prompt, training


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
    "inject_merge_large": Scenario(lifecycle.inject_merge_large),
    "save_load": Scenario(lifecycle.save_load),
    "peak_memory": Scenario(training.peak_memory, training.RSS_VARIANTS),
    "ia3_step": Scenario(training.ia3_step),
    "adalora_step": Scenario(adalora.adalora_step),
    "adalora_step_short": Scenario(adalora.adalora_step_short),
    "prompt_step": Scenario(prompt.prompt_step),
    "prefix_step": Scenario(prompt.prefix_step),
    "generate_cache": Scenario(prompt.generate_cache),
}
