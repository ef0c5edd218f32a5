"""``AdapterLayer``: the wrapper a tuner puts around each targeted module."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from peft_core.errors import MergeError, PeftError
from peft_core.exact_merge import MergeRecord, merge_exactly, unmerge_exactly

if TYPE_CHECKING:
    from peft_core.config import PeftConfig

BASE_ADAPTER = "__base__"  # in ``adapter_names``: this row gets no adapter

_LOADING_EVERY_TENSOR: ContextVar[bool] = ContextVar("peft_core_loading_every_tensor", default=False)


def weights_will_be_loaded() -> bool:
    """True while a load injects an adapter whose every tensor the checkpoint then overwrites.

    Layers may then skip initialising new adapter weights (``torch.empty``): drawing
    random numbers that are overwritten at once is most of an injection's time.
    """
    return _LOADING_EVERY_TENSOR.get()


@contextmanager
def loading_every_tensor(active: bool = True) -> Iterator[None]:
    """Within the block (this thread or task only), ``weights_will_be_loaded()`` is ``active``."""
    token = _LOADING_EVERY_TENSOR.set(active)
    try:
        yield
    finally:
        _LOADING_EVERY_TENSOR.reset(token)


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


class AdapterLayer(nn.Module):
    """Wraps ``base_layer`` and holds adapters by name.

    Subclasses name their per-adapter containers (``nn.ModuleDict``/``nn.ParameterDict``
    keyed by adapter name) in ``adapter_attribute_names`` and implement ``update_layer``,
    ``forward`` and, where merging makes sense, ``merged_weights``/``unmerged_weights``.
    "Active" (used in forward), "disabled" (temporarily off) and "trainable"
    (``requires_grad``) are separate states; none changes another.
    """

    adapter_attribute_names: ClassVar[tuple[str, ...]] = ()
    #: Whether forward honours ``row_routing`` (per-row adapters); ``adapter_rows`` refuses
    #: models with a layer that does not, instead of silently ignoring ``adapter_names``.
    supports_row_routing: ClassVar[bool] = False
    #: The dimension holding the adapter's rank, by saved key relative to the layer (e.g.
    #: ``{"lora_A.weight": 0}``): lets a failed load call a shape mismatch a rank mismatch.
    rank_dims: ClassVar[Mapping[str, int]] = {}
    # Whether per-adapter ModuleDicts may hold adapter layers (copies of whole user modules).
    nests_adapter_layers: ClassVar[bool] = False

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter_configs: dict[str, PeftConfig] = {}
        self.requested_adapters: list[str] = []  # the model-wide active list
        self.active_adapters: list[str] = []  # the part of it present on this layer
        self.merged_adapters: list[str] = []
        self.disabled = False
        self.row_routing: RowRouting | None = None
        # Base parameters shared with modules outside this layer (tied weights), by name
        # -> the other paths; merging into them is refused. Filled at injection.
        self.shared_weights: dict[str, list[str]] = {}
        self._merge_records: list[MergeRecord] = []  # oldest first; see exact_merge

    # --- what a subclass supplies ---

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        """Create the tensors of ``adapter_name`` in this layer's containers."""
        raise NotImplementedError

    def merged_weights(self, adapter_names: Sequence[str]) -> dict[str, Tensor]:
        """New values of base parameters (by name, e.g. "weight") with these adapters merged."""
        raise MergeError(f"{type(self).__name__} cannot be merged")

    def unmerged_weights(self, adapter_names: Sequence[str]) -> dict[str, Tensor]:
        """Base parameter values with these (merged) adapters taken out again."""
        raise MergeError(f"{type(self).__name__} cannot be unmerged")

    # --- adapters ---

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapter_configs)

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    @property
    def use_adapters(self) -> bool:
        """Whether forward should add unmerged adapters at all."""
        return not self.disabled and bool(self.active_adapters) and not self.merged_adapters

    def add_adapter(self, adapter_name: str, config: PeftConfig) -> None:
        """Add an adapter; its tensors are trainable unless ``config.inference_mode``."""
        self.update_layer(adapter_name, config)
        self.adapter_configs[adapter_name] = config
        for param in self.adapter_parameters(adapter_name):
            param.requires_grad_(not config.inference_mode)
        self.set_active_adapters(self.requested_adapters)

    def place_adapter(self, adapter_name: str, device: torch.device, dtype: torch.dtype | None) -> None:
        """Move one adapter's floating-point tensors to ``device``/``dtype``, keeping requires_grad."""
        for container in self._containers():
            if adapter_name not in container:
                continue
            item = container[adapter_name]
            if isinstance(item, nn.Parameter) and isinstance(container, nn.ParameterDict):
                moved = item.detach().to(device=device, dtype=dtype if item.is_floating_point() else None)
                if (moved.device, moved.dtype) != (item.device, item.dtype):
                    container[adapter_name] = nn.Parameter(moved, requires_grad=item.requires_grad)
            elif isinstance(item, nn.Module):
                item.to(device=device, dtype=dtype)

    def _containers(self) -> list[nn.ModuleDict | nn.ParameterDict]:
        return [getattr(self, attr) for attr in self.adapter_attribute_names]

    def adapter_parameters(self, adapter_name: str) -> list[nn.Parameter]:
        """The trainable tensors of one adapter in this layer."""
        params: list[nn.Parameter] = []
        for container in self._containers():
            if adapter_name in container:
                item = container[adapter_name]
                params.extend([item] if isinstance(item, nn.Parameter) else item.parameters())
        return params

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]:
        """One adapter's tensors (live, not copies), keyed relative to this layer as saved."""
        state: dict[str, Tensor] = {}
        for attr in self.adapter_attribute_names:
            container = getattr(self, attr)
            if adapter_name not in container:
                continue
            item = container[adapter_name]
            if isinstance(item, nn.Parameter):
                state[attr] = item
            else:
                for key, tensor in item.state_dict(keep_vars=True).items():
                    state[f"{attr}.{key}"] = tensor
        return state

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter's tensors; it must not be merged."""
        if adapter_name in self.merged_adapters:
            raise MergeError(f"adapter {adapter_name!r} is merged; unmerge it before deleting it")
        for container in self._containers():
            if adapter_name in container:
                del container[adapter_name]
        self.adapter_configs.pop(adapter_name, None)
        self.set_active_adapters([n for n in self.requested_adapters if n != adapter_name])

    def set_active_adapters(self, adapter_names: Sequence[str]) -> None:
        """Set the model-wide active list; this layer uses those of them it holds."""
        self.requested_adapters = list(adapter_names)
        self.active_adapters = [n for n in adapter_names if n in self.adapter_configs]

    # --- merging ---

    def check_merge(self, adapter_names: Sequence[str], reversible: bool = True, finite: bool = False) -> None:
        """Raise ``MergeError`` if this merge must not happen; changes nothing.

        ``finite`` (safe merge) checks the merged weights for NaN/inf. ``reversible`` says
        an unmerge must be able to undo the merge; layers that cannot promise it refuse.
        """
        if self.shared_weights and self._mergeable(adapter_names):
            self._refuse_shared_weights()
        if finite:
            for name, value in self.merged_weights(self._mergeable(adapter_names)).items():
                if not torch.isfinite(value).all():
                    raise MergeError(f"merging {list(adapter_names)} gives non-finite values in {name!r}")

    def _refuse_shared_weights(self) -> None:
        shared = "; ".join(f"{name!r} is also {', '.join(others)}" for name, others in self.shared_weights.items())
        raise MergeError(
            f"this layer's weights are shared with other modules (tied weights: {shared}); merging "
            "would change those modules too. Keep the adapter unmerged, or untie the weights first "
            "(give the module its own copy of the parameter, and set tie_word_embeddings=False)"
        )

    def check_unmerge(self, adapter_names: Sequence[str]) -> None:
        """Raise ``MergeError`` if these merged adapters cannot be taken out; changes nothing."""

    def _mergeable(self, adapter_names: Sequence[str]) -> list[str]:
        return [n for n in adapter_names if n in self.adapter_configs and n not in self.merged_adapters]

    def merge(self, adapter_names: Sequence[str]) -> None:
        """Fold adapters into the base weights (computed in fp32, rounded once).

        Either the layer is merged or, on an error, left bit-identical. An unmerge of the
        same adapters restores the weights bit for bit (see ``exact_merge``).
        """
        names = self._mergeable(adapter_names)
        if names:
            self._merge_records.append(merge_exactly(self, names))
            self.merged_adapters.extend(names)

    def unmerge(self, adapter_names: Sequence[str] | None = None) -> None:
        """Take merged adapters (all by default) out of the base weights again."""
        names = [n for n in self.merged_adapters if adapter_names is None or n in adapter_names]
        if names:
            unmerge_exactly(self, self._merge_records, names)
            self.merged_adapters = [n for n in self.merged_adapters if n not in names]

    def drop_merge_residues(self) -> None:
        """Free what makes an unmerge exact; it then restores the weights within one rounding step."""
        for record in self._merge_records:
            record.residues.clear()

    def unwrapped(self, merge: bool) -> nn.Module:
        """The module that replaces this layer on unload (merged beforehand if ``merge``)."""
        return self.base_layer

    def extra_repr(self) -> str:
        return f"adapters={self.adapter_names}, active={self.active_adapters}, merged={self.merged_adapters}"


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    """Every adapter layer of ``model`` with its dotted path, in ``named_modules`` order.

    The per-adapter ``ModuleDict`` containers inside adapter layers are not searched (they
    hold each adapter's own small modules), so the walk costs the same with 1 or 64
    adapters: it runs on every per-row call.
    """
    seen: set[int] = set()

    def visit(path: str, module: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
        if id(module) in seen:
            return
        seen.add(id(module))
        skip_dicts = False
        if isinstance(module, AdapterLayer):
            yield path, module
            skip_dicts = not module.nests_adapter_layers
        for name, child in module._modules.items():
            if child is None or (skip_dicts and isinstance(child, nn.ModuleDict)):
                continue
            yield from visit(f"{path}.{name}" if path else name, child)

    yield from visit("", model)


@contextmanager
def adapter_rows(model: nn.Module, adapter_names: Sequence[str]) -> Iterator[None]:
    """Use ``adapter_names[i]`` for row ``i`` of the batch in every forward inside the block.

    ``"__base__"`` means no adapter for that row. The routing lives only inside the block,
    also when a forward raises.
    """
    layers = [layer for _, layer in adapter_layers(model)]
    known = {name for layer in layers for name in layer.adapter_configs}
    unknown = sorted(set(adapter_names) - known - {BASE_ADAPTER})
    if unknown:
        raise PeftError(f"adapter_names has unknown adapters {unknown}; known: {sorted(known)} and {BASE_ADAPTER!r}")
    unsupported = sorted({type(layer).__name__ for layer in layers if not layer.supports_row_routing})
    if unsupported:
        raise PeftError(f"per-row adapters (adapter_names=...) are not supported by {', '.join(unsupported)}")
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
