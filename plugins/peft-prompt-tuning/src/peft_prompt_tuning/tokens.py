"""``VirtualTokens``: the model-level adapter of a prompt-learning method.

It holds ``embedding`` (one row per virtual token; saved as ``prompt_embeddings``) and
computes the vectors the model receives for one batch row (``tokens()``). Methods that
reparameterise (p-tuning's prompt encoder, prefix tuning's projection) compute them from
``embedding`` through their own head while training; a checkpoint holds the computed
vectors, so an adapter built for inference (or loaded to train on) has no head and
``tokens()`` is ``embedding.weight`` itself, as in Hugging Face PEFT.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from peft_core.contract import weights_will_be_loaded


def new_embedding(count: int, width: int, device: torch.device | None) -> nn.Embedding:
    """``nn.Embedding(count, width)`` in fp32 on ``device``: N(0, 1) rows, or uninitialised
    while a load is about to overwrite every tensor (``weights_will_be_loaded()``)."""
    if weights_will_be_loaded():
        return nn.Embedding(count, width, device="meta").to_empty(device=device or "cpu")
    return nn.Embedding(count, width, device=device)


class VirtualTokens(nn.Module):
    """``count`` learned vectors of ``width``; ``tokens()`` is what every batch row receives."""

    def __init__(self, count: int, width: int, device: torch.device | None = None) -> None:
        super().__init__()
        self.embedding = new_embedding(count, width, device)

    @property
    def has_head(self) -> bool:
        """Whether ``tokens()`` is computed from ``embedding`` (else it is ``embedding.weight``)."""
        return False

    def tokens(self) -> Tensor:
        """(count, width): the virtual tokens of one batch row (the same for every row)."""
        return self.embedding.weight

    def forward(self) -> Tensor:
        return self.tokens()
