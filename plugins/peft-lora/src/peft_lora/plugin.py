"""The entry point of peft-lora (group ``peft_core.plugins``, name ``lora``)."""

from __future__ import annotations

from peft_core import BaseTuner, hookimpl
from peft_lora.tuner import LoraTuner


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [LoraTuner]
