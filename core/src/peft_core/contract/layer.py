"""``AdapterLayer``: the wrapper a tuner puts around each targeted module.

A layer holds adapters by name and knows which are active, merged and disabled; the
engine (injection, merging, per-row routing, hotswap) drives it through the methods
below. What a method implements: ``update_layer`` (create one adapter's tensors),
``forward``, and for merging either ``delta_weight`` (additive methods: the defaults
do the rest) or ``merged_weights``/``unmerged_weights``. ``capabilities`` says which
operations beyond forward/save/load the class supports (never inherited).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from peft_core.contract.capabilities import NONE, Capabilities
from peft_core.contract.rows import RowRouting
from peft_core.errors import MergeError, PeftError

if TYPE_CHECKING:
    from peft_core.contract.config import PeftConfig

_LOADING_EVERY_TENSOR: ContextVar[bool] = ContextVar("peft_core_loading_every_tensor", default=False)


def weights_will_be_loaded() -> bool:
    """True while a load adds an adapter whose every tensor the checkpoint then overwrites.

    ``update_layer`` may then skip initialising the new tensors (``torch.empty``): drawing
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


@dataclass
class Merge:
    """What merging adapters into one layer computes.

    ``weights``: new values of base parameters by name (``{"weight": W'}``). ``state``:
    whatever an unmerge of exactly this merge needs besides the merged weights (DoRA's
    weight norms); the engine keeps it and hands it back to ``unmerged_weights``.
    """

    weights: dict[str, Tensor]
    state: Any = None


def add_deltas(weight: Tensor, deltas: Sequence[Tensor], sign: float) -> Tensor:
    """``weight + sign * sum(deltas)`` computed in fp32 (fp64 for fp64), rounded once to ``weight``'s dtype."""
    accumulate = torch.promote_types(weight.dtype, torch.float32)
    total = weight.detach().to(accumulate, copy=True)
    for delta in deltas:
        total.add_(delta.to(accumulate).reshape(weight.shape), alpha=sign)
    return total.to(weight.dtype)


class AdapterLayer(nn.Module):
    """Wraps ``base_layer`` and holds adapters by name.

    Subclasses name their per-adapter containers (``nn.ModuleDict``/``nn.ParameterDict``
    keyed by adapter name) in ``adapter_attribute_names``; the state-dict keys are
    ``<attribute>.<key inside the item>`` (``lora_A.weight``) or ``<attribute>`` for a
    parameter (``ia3_l``). "Active" (used in forward), "disabled" (temporarily off) and
    "trainable" (``requires_grad``) are separate states; none changes another.
    """

    adapter_attribute_names: ClassVar[tuple[str, ...]] = ()
    #: What this class supports; restate it in every concrete subclass (see ``Capabilities``).
    capabilities: ClassVar[Capabilities] = NONE
    #: The dimension holding the adapter's rank, by saved key relative to the layer (e.g.
    #: ``{"lora_A.weight": 0}``): lets a failed load call a shape mismatch a rank mismatch.
    rank_dims: ClassVar[Mapping[str, int]] = {}
    #: Whether per-adapter ModuleDicts may hold adapter layers (copies of whole user modules).
    nests_adapter_layers: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "capabilities" not in cls.__dict__:
            cls.capabilities = NONE  # declared, never inherited

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter_configs: dict[str, PeftConfig] = {}  # per-module configs (the tuner's resolve_config)
        self.requested_adapters: list[str] = []  # the model-wide active list
        self.active_adapters: list[str] = []  # the part of it present on this layer
        self.merged_adapters: list[str] = []
        self.disabled = False
        self.row_routing: RowRouting | None = None  # set by the engine for one per-row call
        # Base parameters shared with modules outside this layer (tied weights), by name
        # -> the other paths; merging into them is refused. Filled by the engine.
        self.shared_weights: dict[str, list[str]] = {}
        self.merge_records: list[Any] = []  # the engine's, oldest first (undo data of each merge)

    # --- what a subclass supplies ---

    def update_layer(self, adapter_name: str, config: PeftConfig) -> None:
        """Create the tensors of ``adapter_name`` in this layer's containers.

        Called by ``add_adapter`` with the config resolved for this module. Initialise
        them unless ``weights_will_be_loaded()``; the engine then moves them to the base
        weight's device (fp32 on a half-precision base).
        """
        raise NotImplementedError

    def delta_weight(self, adapter_name: str) -> Tensor:
        """Additive methods: the adapter's update of ``base_layer.weight``, fp32, its shape.

        With it, the default ``merged_weights``/``unmerged_weights`` add and subtract it.
        """
        raise MergeError(f"{type(self).__name__} has no delta_weight and cannot be merged")

    def merged_weights(self, adapter_names: Sequence[str]) -> Merge:
        """New base parameter values with these adapters merged (nothing is written here).

        Default: ``weight + sum(delta_weight)`` in fp32, rounded once.
        """
        weight = self.base_layer.get_parameter("weight")
        return Merge({"weight": add_deltas(weight, [self.delta_weight(n) for n in adapter_names], 1.0)})

    def unmerged_weights(self, adapter_names: Sequence[str], state: Any = None) -> dict[str, Tensor]:
        """Base parameter values with these merged adapters taken out again.

        ``state`` is what ``merged_weights`` returned for this merge (None for merges that
        need nothing, or when the engine undoes merges it has no state for).
        Default: ``weight - sum(delta_weight)`` in fp32, rounded once.
        """
        weight = self.base_layer.get_parameter("weight")
        return {"weight": add_deltas(weight, [self.delta_weight(n) for n in adapter_names], -1.0)}

    def merge_in_place(self, adapter_names: Sequence[str]) -> Any:
        """Write these adapters into the base parameters for an unload, which is never undone.

        Returns the ``state`` that ``unmerged_weights`` needs to take them out again (the
        engine's rollback when a later layer fails, within one rounding step). If it raises,
        this layer's parameters must be as before (within one rounding step). Default: copy
        ``merged_weights`` in. A layer may write in place instead (no weight-sized copy).
        """
        merge = self.merged_weights(adapter_names)
        with torch.no_grad():
            for name, value in merge.weights.items():
                self.base_layer.get_parameter(name).copy_(value)
        return merge.state

    def check_merge(self, adapter_names: Sequence[str], reversible: bool = True) -> None:
        """Raise ``MergeError`` if this layer must refuse the merge; changes nothing.

        ``reversible``: an unmerge must be able to undo it (IA3 refuses zero entries then).
        Also called on layers that do not declare ``mergeable``, before the engine's generic
        refusal, so such a layer can say why and what to do instead.
        """

    # --- hotswap (used where ``capabilities.hotswap``) ---

    def prepare_hotswap(self, max_rank: int | None) -> None:
        """Make every adapter swappable for one of rank <= ``max_rank`` without new shapes or
        recompiles (None: keep the current ranks, only make the swap recompile-free)."""

    def check_hotswap(self, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
        """Raise ``PeftError`` unless ``tensors`` (keys as in ``adapter_state_dict``) can be swapped in.

        Default: the same keys and shapes as the live tensors.
        """
        live = self.adapter_state_dict(adapter_name)
        if set(tensors) != set(live):
            raise PeftError(f"checkpoint has {sorted(tensors)}, the adapter has {sorted(live)}")
        wrong = [key for key, value in tensors.items() if value.shape != live[key].shape]
        if wrong:
            raise PeftError(f"shapes differ for {wrong}: a hotswap keeps every tensor's shape")

    def hotswap(self, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
        """Copy ``tensors`` into the adapter in place (after ``check_hotswap`` passed)."""
        live = self.adapter_state_dict(adapter_name)
        with torch.no_grad():
            for key, tensor in tensors.items():
                live[key].copy_(tensor)
        self.adapter_configs[adapter_name] = config

    # --- adapters ---

    @property
    def adapter_names(self) -> list[str]:
        """The adapters this layer holds, in the order they were added."""
        return list(self.adapter_configs)

    @property
    def merged(self) -> bool:
        """Whether some adapter is merged into the base weights."""
        return bool(self.merged_adapters)

    @property
    def use_adapters(self) -> bool:
        """Whether forward should add unmerged adapters at all."""
        return not self.disabled and bool(self.active_adapters) and not self.merged_adapters

    def add_adapter(self, adapter_name: str, config: PeftConfig) -> None:
        """Add an adapter (``update_layer``); its tensors train unless ``config.inference_mode``."""
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

    def unwrapped(self, merge: bool) -> nn.Module:
        """The module that replaces this layer on unload (after merging, if ``merge``)."""
        return self.base_layer

    def extra_repr(self) -> str:
        return f"adapters={self.adapter_names}, active={self.active_adapters}, merged={self.merged_adapters}"


def plain_modules(model: nn.Module, root: bool = False) -> Iterator[tuple[str, nn.Module]]:
    """Named modules of ``model`` (``model`` itself only with ``root``), not descending into
    adapter layers: those are yielded, their insides not."""
    inside: list[str] = []
    for path, module in model.named_modules():
        if (not path and not root) or any(path.startswith(prefix) for prefix in inside):
            continue
        if isinstance(module, AdapterLayer):
            inside.append(path + ".")
        yield path, module


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


#: Child names under which torch's wrappers hold the module they wrap (FSDP1, activation
#: checkpointing, torch.compile): they are no part of a checkpoint key.
WRAPPER_CHILDREN = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})


def key_paths(model: nn.Module) -> dict[int, str]:
    """``id(module) -> dotted path as checkpoint keys name it``: the path in the module tree
    without the wrappers' own levels, so keys are the same whatever wraps the model."""
    paths: dict[int, str] = {}

    def visit(path: str, module: nn.Module) -> None:
        if id(module) in paths:
            return
        paths[id(module)] = path
        for name, child in module._modules.items():
            if child is not None:
                visit(path if name in WRAPPER_CHILDREN else f"{path}.{name}" if path else name, child)

    visit("", model)
    return paths
