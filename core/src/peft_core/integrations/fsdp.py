"""FSDP2 sharding that keeps frozen base weights and trainable adapter tensors in separate groups.

``torch.distributed.fsdp.fully_shard`` makes one communication group per call: the
parameters of the module(s) given that no earlier call took. ``shard_plan`` chooses the
calls so that a group is all frozen or all trainable: inside each block (a transformer
layer), first the largest frozen subtrees together (base layers, norms: one all-gather,
never a gradient), then the block itself (what is left: the adapter tensors, whose
gradients are reduce-scattered); the root last in the same way. FSDP1's flat parameters
need ``requires_grad`` uniform per group; FSDP2 accepts mixed groups, but keeping them
apart means the frozen groups never carry gradient buffers and the trainable ones are
small.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from peft_core.errors import PeftError

__all__ = ["ShardGroup", "default_block_types", "shard_model", "shard_plan"]


@dataclass(frozen=True)
class ShardGroup:
    """One ``fully_shard`` call: module paths sharded together and the parameters they take."""

    modules: tuple[str, ...]  # "" is the root model
    parameters: tuple[str, ...]
    trainable: bool | None  # True/False when all its parameters agree, None when mixed

    def describe(self) -> str:
        kind = {True: "trainable", False: "frozen", None: "mixed"}[self.trainable]
        where = ", ".join(m or "<root>" for m in self.modules)
        return f"{kind:9} {len(self.parameters):4d} tensors  [{where}]"


def default_block_types(model: nn.Module) -> set[str]:
    """Class names of the repeated blocks: transformers' ``_no_split_modules`` of any submodule."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


def _subtrees(root: nn.Module, root_path: str, owned: set[int], keep: Callable[[nn.Parameter], bool]) -> Iterator[str]:
    """Paths of the largest submodules of ``root`` whose parameters all pass ``keep``, none taken yet.

    Containers (ModuleList, ModuleDict...) are never picked: their forward never runs, so
    FSDP's hooks on them would never gather their parameters; their children are.
    """
    params = list(root.parameters())
    if params and not isinstance(root, _CONTAINERS) and all(id(p) not in owned and keep(p) for p in params):
        yield root_path
        return
    for name, child in root.named_children():
        yield from _subtrees(child, f"{root_path}.{name}" if root_path else name, owned, keep)


def _take(model: nn.Module, paths: list[str], owned: set[int], names: dict[int, str]) -> ShardGroup | None:
    taken = []
    for path in paths:
        for param in model.get_submodule(path).parameters():
            if id(param) not in owned:
                owned.add(id(param))
                taken.append(param)
    if not taken and paths != [""]:
        return None
    flags = {p.requires_grad for p in taken}
    return ShardGroup(tuple(paths), tuple(names[id(p)] for p in taken), flags.pop() if len(flags) == 1 else None)


def _trainable_of(dtype: str) -> Callable[[nn.Parameter], bool]:
    return lambda p: p.requires_grad and str(p.dtype) == dtype


def _block_groups(model: nn.Module, path: str, owned: set[int]) -> Iterator[list[str]]:
    """The ``fully_shard`` calls for one block: frozen parts, then trainable parts per extra dtype, then itself."""
    block = model.get_submodule(path)
    frozen = list(_subtrees(block, path, owned, lambda p: not p.requires_grad))
    if frozen == [path]:
        yield frozen
        return
    if frozen:
        yield frozen
    # FSDP2 wants one dtype among a group's trainable tensors: fp32 adapters next to a
    # bf16 copy in modules_to_save get a group each (the last dtype stays with the block).
    dtypes = sorted({str(p.dtype) for p in block.parameters() if p.requires_grad and id(p) not in owned})
    for dtype in dtypes[:-1]:
        paths = list(_subtrees(block, path, owned, _trainable_of(dtype)))
        if paths:
            yield paths
    yield [path]


def shard_plan(model: nn.Module, block_types: Collection[str | type[nn.Module]] | None = None) -> list[ShardGroup]:
    """The ``fully_shard`` calls, bottom-up, that ``shard_model`` makes; the root is last.

    ``block_types`` (class names or classes) are the units sharded one by one, by
    default transformers' ``_no_split_modules``; without any, the root is the only block.
    Every parameter belongs to exactly one group.
    """
    wanted = default_block_types(model) if block_types is None else set(block_types)
    names = {id(p): n for n, p in model.named_parameters()}
    blocks = [path for path, m in model.named_modules() if path and {type(m), type(m).__name__} & wanted]
    owned: set[int] = set()
    groups: list[ShardGroup] = []
    for path in [*reversed(blocks), ""]:  # reversed pre-order: descendants before ancestors
        for paths in _block_groups(model, path, owned):
            group = _take(model, paths, owned, names)
            if group is not None:
                groups.append(group)
    return groups


def shard_model(
    model: nn.Module,
    *,
    block_types: Collection[str | type[nn.Module]] | None = None,
    mesh: Any = None,
    **fully_shard_kwargs: Any,
) -> list[ShardGroup]:
    """Apply FSDP2 ``fully_shard`` to ``model`` in place, following ``shard_plan``; returns the plan.

    Call it on every rank after the adapters are added (and loaded) and before building
    the optimizer. ``mesh`` and the keyword arguments (``reshard_after_forward``,
    ``mp_policy``, ``offload_policy``...) go to every ``fully_shard`` call.
    """
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError as exc:
        raise PeftError("shard_model needs torch.distributed.fsdp.fully_shard (FSDP2, torch >= 2.6)") from exc
    plan = shard_plan(model, block_types)
    for group in plan:
        modules = [model.get_submodule(path) for path in group.modules]
        fully_shard(modules[0] if len(modules) == 1 else modules, mesh=mesh, **fully_shard_kwargs)
    return plan
