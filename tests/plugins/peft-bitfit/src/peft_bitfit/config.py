"""``BitFitConfig``: which layers get a learned bias delta."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peft_core.contract import TargetedConfig


class BitFitConfig(TargetedConfig):
    """``y = f(x) + d`` on each target, ``d`` shaped like the target's bias (zeros at init)."""

    peft_type: Literal["BITFIT"] = "BITFIT"
    init_scale: float = Field(default=0.0, ge=0.0, description="Std of the initial delta; 0 starts at the base model.")
