"""Per-row adapters: which adapter each row of a batch uses, for one forward call."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from peft_core.errors import PeftError

BASE_ADAPTER = "__base__"  # in ``adapter_names``: this row gets no adapter


@dataclass(frozen=True)
class RowRouting:
    """Which adapter each row of a batch uses, for one forward call.

    ``cache`` is scratch space for that one call: layers holding the same adapters share
    work there (the row-to-slot map, a grouping plan) instead of redoing it per layer.
    """

    adapter_names: tuple[str, ...]  # distinct adapters in the batch, without "__base__"
    row_index: Tensor  # (batch,) int64 on the CPU: 0 = no adapter, i + 1 = adapter_names[i]
    cache: dict[Hashable, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def rows(self) -> int:
        """The batch size this routing is for."""
        return int(self.row_index.shape[0])

    def check_rows(self, batch: int) -> None:
        """Raise ``PeftError`` unless the batch has one row per entry of ``adapter_names``."""
        if batch != self.rows:
            raise PeftError(
                f"adapter_names has {self.rows} entries but the batch has {batch} rows; give one adapter name "
                f"(or {BASE_ADAPTER!r}) per row"
            )

    def layer_slots(self, layer_adapters: Sequence[str]) -> Tensor:
        """(batch,) CPU int64 slots into ``[no adapter] + layer_adapters``; adapters absent here map to 0."""
        key = ("slots", tuple(layer_adapters))
        slots = self.cache.get(key)
        if slots is None:
            position = {name: i + 1 for i, name in enumerate(layer_adapters)}
            mapping = torch.tensor([0] + [position.get(name, 0) for name in self.adapter_names])
            slots = self.cache[key] = mapping[self.row_index]
        return slots

    def layer_used(self, layer_adapters: Sequence[str]) -> list[int]:
        """Positions in ``layer_adapters`` of the adapters some row uses (sorted)."""
        key = ("used", tuple(layer_adapters))
        used = self.cache.get(key)
        if used is None:
            used = self.cache[key] = sorted({int(s) - 1 for s in self.layer_slots(layer_adapters).tolist() if s})
        return list(used)

    def layer_index(self, layer_adapters: Sequence[str], device: torch.device) -> Tensor:
        """``layer_slots`` on ``device`` (moved once per call and device)."""
        key = ("index", tuple(layer_adapters), device)
        index = self.cache.get(key)
        if index is None:
            index = self.cache[key] = self.layer_slots(layer_adapters).to(device)
        return index
