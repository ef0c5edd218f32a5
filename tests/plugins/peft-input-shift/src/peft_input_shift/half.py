"""A second plugin implementing peft-input-shift's own hook: every initial shift is 0.5."""

from __future__ import annotations

import torch
from torch import Tensor

from peft_core.contract import hookimpl


@hookimpl
def peft_input_shift_init(dim: int) -> Tensor | None:
    return torch.full((dim,), 0.5)
