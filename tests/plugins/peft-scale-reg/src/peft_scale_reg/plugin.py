"""Entry point ``scale_reg``."""

from __future__ import annotations

from peft_core.contract import BaseTuner, hookimpl
from peft_scale_reg.method import ScaleRegTuner


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [ScaleRegTuner]
