"""Per-row adapters for one call: ``adapter_names[i]`` for row ``i`` of the batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from peft_core.contract.layer import adapter_layers
from peft_core.contract.rows import BASE_ADAPTER, RowRouting
from peft_core.errors import AdapterNotFoundError, PeftError


@contextmanager
def adapter_rows(model: nn.Module, adapter_names: Sequence[str]) -> Iterator[None]:
    """Use ``adapter_names[i]`` for row ``i`` of the batch in every forward inside the block.

    ``"__base__"`` means no adapter for that row. Every layer must declare ``per_row``;
    the routing lives only inside the block, also when a forward raises.
    """
    layers = [layer for _, layer in adapter_layers(model)]
    known = {name for layer in layers for name in layer.adapter_configs}
    unknown = sorted(set(adapter_names) - known - {BASE_ADAPTER})
    if unknown:
        raise AdapterNotFoundError(
            f"adapter_names has unknown adapters {unknown}; known: {sorted(known)} and {BASE_ADAPTER!r}"
        )
    unsupported = sorted({type(layer).__name__ for layer in layers if not type(layer).capabilities.per_row})
    if unsupported:
        raise PeftError(
            f"per-row adapters (adapter_names=...) are not supported by {', '.join(unsupported)} "
            "(capabilities.per_row); run one adapter per batch (set_adapter) instead"
        )
    if any(layer.merged for layer in layers):
        raise PeftError("per-row adapters need unmerged adapters: call unmerge_adapter() first")
    distinct = tuple(dict.fromkeys(n for n in adapter_names if n != BASE_ADAPTER))
    index = torch.tensor([0 if n == BASE_ADAPTER else distinct.index(n) + 1 for n in adapter_names])
    routing = RowRouting(distinct, index)
    for layer in layers:
        layer.row_routing = routing
    try:
        yield
    finally:
        for layer in layers:
            layer.row_routing = None
