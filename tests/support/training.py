"""The few-step training loop the tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


def train(
    model: nn.Module,
    loss: Callable[[], Tensor],
    steps: int,
    lr: float,
    optimizer: type[torch.optim.Optimizer] = torch.optim.AdamW,
    params: Iterable[nn.Parameter] | None = None,
) -> list[float]:
    """``steps`` optimiser steps on ``params`` (default: the model's trainable ones); each step's loss."""
    trainable = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    step = optimizer(trainable, lr=lr)
    losses = []
    for _ in range(steps):
        value = loss()
        step.zero_grad()
        value.backward()
        step.step()
        losses.append(value.item())
    return losses
