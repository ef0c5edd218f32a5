"""The entry point of peft-prompt-tuning (group ``peft_core.plugins``, name ``prompt_tuning``)."""

from __future__ import annotations

from peft_core.contract import BaseTuner, hookimpl
from peft_prompt_tuning.tuner import PromptTuningTuner


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [PromptTuningTuner]
