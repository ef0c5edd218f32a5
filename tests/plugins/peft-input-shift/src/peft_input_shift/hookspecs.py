"""The hook peft-input-shift declares for other plugins (through ``peft_add_hookspecs``)."""

from __future__ import annotations

from torch import Tensor

from peft_core.contract import hookspec


@hookspec(firstresult=True)
def peft_input_shift_init(dim: int) -> Tensor | None:
    """The initial shift (``dim`` values) for ``init="hook"`` adapters; None to pass."""
