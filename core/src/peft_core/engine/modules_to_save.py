"""Trainable full copies of whole modules (``modules_to_save``), one copy per adapter."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from peft_core.contract.capabilities import Capabilities
from peft_core.contract.layer import AdapterLayer
from peft_core.errors import MergeError, PeftError

if TYPE_CHECKING:
    from peft_core.contract.config import PeftConfig


class ModulesToSaveWrapper(AdapterLayer):
    """Runs the active adapter's copy of a module instead of the original.

    Saved under the module's own parameter names (``classifier.weight``), as Hugging
    Face PEFT does; disabling adapters falls back to the original module. Attributes the
    wrapper does not have are read from the module in use (``model.head.weight``).
    Merging changes nothing here; unloading with merge puts the active copy in place.
    """

    adapter_attribute_names = ("modules_to_save",)
    capabilities = Capabilities(mergeable=True, per_row=True, hotswap=True, weighted=False)
    nests_adapter_layers = True  # the copies are whole user modules

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.modules_to_save = nn.ModuleDict()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_layer", "modules_to_save", "_modules") or name.startswith("__"):
                raise
            return getattr(self._in_use(), name)

    def _in_use(self) -> nn.Module:
        if self.disabled or not self.active_adapters:
            return self.base_layer
        module: nn.Module = self.modules_to_save[self.active_adapters[0]]
        return module

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

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.row_routing is not None and not self.disabled:
            return self._forward_rows(args, kwargs)
        return self._in_use()(*args, **kwargs)

    def _forward_rows(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        assert self.row_routing is not None
        out = self.base_layer(*args, **kwargs)
        if not isinstance(out, Tensor):
            raise PeftError(
                f"per-row adapters (adapter_names=...) through modules_to_save need a module returning one tensor; "
                f"{type(self.base_layer).__name__} returns a {type(out).__name__}. Run one adapter per batch instead"
            )
        names = list(self.modules_to_save.keys())
        index = self.row_routing.layer_index(names, out.device)
        for position, name in enumerate(names, start=1):
            rows = (index == position).nonzero().flatten()
            if rows.numel():
                picked_args = [_rows_of(a, rows, out.shape[0]) for a in args]
                picked_kwargs = {k: _rows_of(v, rows, out.shape[0]) for k, v in kwargs.items()}
                out = out.index_copy(0, rows, self.modules_to_save[name](*picked_args, **picked_kwargs))
        return out

    def check_unload_merge(self) -> None:
        """Refuse to put the trained copy in place of an original whose weights other modules share."""
        if self.shared_weights and self.active_adapters and not self.disabled:
            raise MergeError(
                f"the original of this modules_to_save copy shares its weights with other modules "
                f"({self.shared_weights}); unloading with merge would put the separately trained copy in "
                "its place and untie them. Keep the PeftModel, or untie the weights first"
            )

    def unwrapped(self, merge: bool) -> nn.Module:
        if merge and self.active_adapters and not self.disabled:
            module: nn.Module = self.modules_to_save[self.active_adapters[0]]
            return module
        return self.base_layer


def _rows_of(value: Any, rows: Tensor, batch: int) -> Any:
    """The rows ``rows`` of a batch-first tensor argument; other arguments as they are."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value.index_select(0, rows.to(value.device))
    return value
