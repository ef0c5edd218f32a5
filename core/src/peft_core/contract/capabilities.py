"""``Capabilities``: what an adapter layer (or a tuner's model-level adapter) supports.

Declared in each concrete class's own body and never inherited: a subclass that does not
restate ``capabilities`` supports nothing, so a variant (DoRA on LoRA, say) cannot
silently take over an ability that is wrong for its math. The engine refuses an
operation that is not declared, with an error naming the class; the conformance suite
runs the check of every declared capability and checks that the others are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Capabilities:
    """Operations beyond forward, save and load (which every adapter supports)."""

    #: ``merge_adapter``/``unmerge_adapter``/``merge_and_unload``: ``merged_weights`` and
    #: ``unmerged_weights`` (or ``delta_weight``) are exact.
    mergeable: bool = False
    #: Per-row adapters in one batch (``adapter_names=[...]``): forward honours ``row_routing``.
    per_row: bool = False
    #: ``hotswap_adapter``: the layer's ``hotswap`` replaces every tensor of the adapter.
    hotswap: bool = False
    #: ``add_weighted_adapter``: the tuner's combination is correct for this layer.
    weighted: bool = False

    def names(self) -> list[str]:
        """The declared operations, by field name."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


NONE = Capabilities()


def declared(cls: type[Any]) -> Capabilities:
    """``cls.capabilities`` if its own body states it, else none (never inherited)."""
    value = cls.__dict__.get("capabilities")
    return value if isinstance(value, Capabilities) else NONE
