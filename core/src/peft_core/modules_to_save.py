"""Trainable full copies of whole modules (``modules_to_save``), one copy per adapter."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from peft_core.errors import MergeError, PeftError
from peft_core.layer import AdapterLayer

if TYPE_CHECKING:
    from peft_core.config import PeftConfig


class ModulesToSaveWrapper(AdapterLayer):
    """Runs the active adapter's copy of a module instead of the original.

    Saved under the module's own parameter names (``classifier.weight``), as Hugging
    Face PEFT does; disabling adapters falls back to the original module.
    """

    adapter_attribute_names = ("modules_to_save",)
    supports_row_routing = True
    nests_adapter_layers = True  # the copies are whole user modules

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.modules_to_save = nn.ModuleDict()

    @property
    def original_module(self) -> nn.Module:
        return self.base_layer

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        self.modules_to_save[adapter_name] = copy.deepcopy(self.base_layer)

    def set_active_adapters(self, adapter_names: Sequence[str]) -> None:
        present = [n for n in adapter_names if n in self.adapter_configs]
        if len(present) > 1:
            raise PeftError(
                f"adapters {present} each have their own copy of a module in modules_to_save; "
                "only one of them can be active at a time"
            )
        super().set_active_adapters(adapter_names)

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        if adapter_name not in self.modules_to_save:
            return {}
        return dict(self.modules_to_save[adapter_name].state_dict(keep_vars=True))

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(x, *args, **kwargs)
        if self.disabled or not self.active_adapters:
            return self.base_layer(x, *args, **kwargs)
        return self.modules_to_save[self.active_adapters[0]](x, *args, **kwargs)

    def _forward_rows(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        assert self.row_routing is not None
        names = list(self.modules_to_save.keys())
        index = self.row_routing.layer_index(names, x.device)
        out: Tensor = self.base_layer(x, *args, **kwargs)
        for position, name in enumerate(names, start=1):
            rows = (index == position).nonzero().flatten()
            if rows.numel():
                out = out.index_copy(0, rows, self.modules_to_save[name](x[rows], *args, **kwargs))
        return out

    def check_merge(self, adapter_names: Sequence[str], reversible: bool = True, finite: bool = False) -> None:
        # Nothing is folded into weights (merge_adapter is a no-op here); only unloading with
        # merge swaps the trained copy in, which would untie a tied original silently.
        if not reversible and self.shared_weights and self.active_adapters and not self.disabled:
            raise MergeError(
                f"the original of this modules_to_save copy shares its weights with other modules "
                f"({self.shared_weights}); unloading with merge would put the separately trained copy in "
                "its place and untie them. Keep the PeftModel, or untie the weights first"
            )

    def merge(self, adapter_names: Sequence[str]) -> None:
        # Nothing to fold: the copy already is the merged module; unload picks it.
        return None

    def unmerge(self, adapter_names: Sequence[str] | None = None) -> None:
        return None

    def unwrapped(self, merge: bool) -> nn.Module:
        if merge and self.active_adapters and not self.disabled:
            return self.modules_to_save[self.active_adapters[0]]
        return self.base_layer
