"""Dropout on the adapter input, as the incumbent applies it; optionally a cheaper mask on the CPU.

By default it is ``F.dropout``: the same random stream as Hugging Face PEFT, so a run
switched from it reproduces at the same seed. Inside ``fast_dropout()`` the CPU mask is
drawn more cheaply. Its semantics are ``nn.Dropout``'s: every element of the adapter's input is kept
independently with probability ``1 - p`` and scaled by ``1 / (1 - p)``; the gradient flows
through the same mask; the mask comes from torch's default generator (``torch.manual_seed``
makes it reproducible). Only how the random bits are drawn differs from
``torch.bernoulli``: profiled on the CPU (AMD, where PyTorch has no vectorised Bernoulli),
``bernoulli_`` draws one random number per element (4.4 ns); here each 64-bit draw gives
two 32-bit uniform integers compared with ``p * 2**32`` (2.1 ns per element), so the
keep probability is ``1 - p`` to within ``2**-32``, finer than ``torch.rand``'s floats.
On other devices and under ``torch.compile`` it is ``F.dropout``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from peft_core.contract import compiling

_INT32_SPAN = 2**32
_FAST: ContextVar[bool] = ContextVar("peft_lora_fast_dropout", default=False)


@contextmanager
def fast_dropout() -> Iterator[None]:
    """Inside the block (the training loop), LoRA dropout on the CPU draws its mask at half the cost.

    Same distribution and gradients as ``nn.Dropout``; the masks differ from Hugging Face
    PEFT's at the same seed (a different use of the random stream), so a run no longer
    reproduces the incumbent's bit for bit. Per thread/task, like any context variable.
    """
    token = _FAST.set(True)
    try:
        yield
    finally:
        _FAST.reset(token)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """A bool mask of ``shape``: True (keep) with probability ``1 - p`` (to ``2**-32``), independently."""
    count = shape.numel()
    bits = torch.empty((count + 1) // 2, dtype=torch.int64, device=device)
    bits.random_(-(2**63), None)  # every one of the 64 bits uniform (two int32 lanes)
    lanes = bits.view(torch.int32)[:count]
    threshold = round(p * _INT32_SPAN) - 2**31  # lanes are uniform on [-2**31, 2**31)
    return (lanes >= threshold).view(shape)


class _InputDropout(torch.autograd.Function):
    """``x * mask / (1 - p)``; saves only the bool mask for backward (1 byte per element)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, p: float) -> Tensor:
        mask = keep_mask(x.shape, p, x.device)
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return _apply(x, mask, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return _apply(grad, mask, ctx.scale), None


def _apply(x: Tensor, mask: Tensor, scale: float) -> Tensor:
    """``x * mask * scale`` (one rounding, as ``native_dropout``). A bool operand makes ``mul``
    take a slow mixed-dtype path (profiled 6.8x slower than converting the mask first)."""
    return x.mul(mask.to(x.dtype)).mul_(scale)


def input_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout with probability ``p`` on ``x`` (identity unless ``training`` and ``p > 0``)."""
    if not training or p == 0.0:
        return x
    if compiling() or not _FAST.get() or x.device.type != "cpu" or p >= 1.0:  # compiling() first: no graph break
        return F.dropout(x, p, training=True)
    dropped: Tensor = _InputDropout.apply(x, p)  # type: ignore[no-untyped-call]
    return dropped
