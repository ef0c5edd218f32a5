"""Training across processes: DDP checks, adapter state gathered from sharded models, rank-0 saving.

Nothing here imports more than torch, and ``torch.distributed`` (or deepspeed, when a
ZeRO-3 parameter is present) only when called. The FSDP2 sharding helpers
(``peft_core.integrations.fsdp``) and the DeepSpeed ones (``peft_core.integrations.deepspeed``)
are re-exported here.

    model = get_peft_model(base, config)
    ddp = wrap_ddp(model)                      # refuses adapters that no forward can reach
    ...                                        # train
    save_pretrained(ddp, "out")                # every rank calls it; rank 0 writes

Under FSDP2 (``shard_model``) the adapter parameters are ``DTensor`` shards (a rank may
hold 0 rows of a small one), under DeepSpeed ZeRO-3 empty placeholders of partitioned
parameters; ``gather_adapter_state_dict`` all-gathers just the adapter tensors (DTensor
``full_tensor()``, ``deepspeed.zero.GatheredParameters``), so nothing sharded or empty
reaches a file. ``load_adapter_weights`` is the way back in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import adapter_layers
from peft_core.contract.tuner import MODEL_PREFIX
from peft_core.engine import unwrap_model, view_of
from peft_core.errors import AdapterSaveError, PeftError
from peft_core.integrations.deepspeed import (
    adapter_parameters,
    gathered,
    is_zero3,
    refresh_master_weights,
    require_engine_for_zero3,
    update_and_allocate,
)
from peft_core.integrations.fsdp import ShardGroup, shard_model, shard_plan
from peft_core.io.checkpoint import adapter_subdir, is_sharded, read_adapter, write_adapter
from peft_core.io.embedding_layers import SaveEmbeddings, embedding_tensors
from peft_core.io.loading import LoadReport, adapter_key_map, select_adapter_state_dict, set_peft_model_state_dict
from peft_core.io.model_card import write_model_card

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "ShardGroup",
    "adapter_key_map",
    "freeze_unused_adapters",
    "gather_adapter_state_dict",
    "is_sharded",
    "load_adapter_weights",
    "rank",
    "save_pretrained",
    "select_adapter_state_dict",
    "shard_model",
    "shard_plan",
    "unused_trainable_parameters",
    "unwrap_model",
    "update_and_allocate",
    "wrap_ddp",
]


def rank() -> int:
    """This process's rank in the default group; 0 when not running distributed."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


# --- DDP: every trainable parameter must receive a gradient ---


def unused_trainable_parameters(model: nn.Module) -> list[str]:
    """Names of parameters that require grad but that no forward uses in the current adapter state.

    Those are the tensors of adapters that are inactive, disabled or merged in their layer
    (a second trainable adapter next to the active one, say). DDP without
    ``find_unused_parameters=True`` fails on them at the second step. Frozen base weights
    and the originals of ``modules_to_save`` never require grad, so they are not listed.
    """
    model = unwrap_model(model)
    names = {id(param): name for name, param in model.named_parameters()}
    unused: list[str] = []
    for _, layer in adapter_layers(model):
        for adapter in layer.adapter_configs:
            in_use = not layer.disabled and adapter in layer.active_adapters and adapter not in layer.merged_adapters
            if not in_use:
                unused.extend(names[id(p)] for p in layer.adapter_parameters(adapter) if p.requires_grad)
    return unused


def freeze_unused_adapters(model: nn.Module) -> list[str]:
    """Set ``requires_grad=False`` on ``unused_trainable_parameters(model)``; returns their names.

    Call it before wrapping the model in DDP (or ``accelerator.prepare``) when it holds
    trainable adapters that are not active. Re-enable them with ``requires_grad_(True)``.
    """
    unused = set(unused_trainable_parameters(model))
    for name, param in unwrap_model(model).named_parameters():
        if name in unused:
            param.requires_grad_(False)
    return sorted(unused)


def wrap_ddp(model: nn.Module, **ddp_kwargs: Any) -> DistributedDataParallel:
    """``DistributedDataParallel(model, **ddp_kwargs)``, after checking that every trainable
    parameter is used: trainable adapters that are not active raise ``PeftError`` up front
    instead of DDP's "unused parameters" error at the second step.
    """
    from torch.nn.parallel import DistributedDataParallel

    unused = unused_trainable_parameters(model)
    if unused and not ddp_kwargs.get("find_unused_parameters", False):
        shown = ", ".join(unused[:4]) + (f" and {len(unused) - 4} more" if len(unused) > 4 else "")
        raise PeftError(
            f"{len(unused)} trainable parameters belong to adapters that are not active, so DDP would get no "
            f"gradient for them: {shown}. Call peft_core.distributed.freeze_unused_adapters(model) (or "
            "set_adapter() the adapters you train) before wrapping, or pass find_unused_parameters=True"
        )
    return DistributedDataParallel(model, **ddp_kwargs)


# --- adapter state from sharded or gathered models ---


def _check_not_fsdp1(model: nn.Module) -> None:
    if any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()):
        raise PeftError(
            "the model is wrapped in FSDP1 (FullyShardedDataParallel), whose flat parameters hide the adapter "
            "tensors; shard it with peft_core.distributed.shard_model (FSDP2, torch.distributed.fsdp.fully_shard)"
        )


def gather_adapter_state_dict(model: nn.Module, adapter_name: str = "default") -> dict[str, Tensor]:
    """The adapter's full tensors, keyed as saved; all-gathers ``DTensor`` shards (FSDP2) and
    ZeRO-3 partitions (``deepspeed.zero.GatheredParameters``; the values are copied out).

    A collective when the model is sharded: call it on every rank, in the same order.
    Only the adapter's own tensors are gathered, never the frozen base weights.
    """
    model = unwrap_model(model)
    _check_not_fsdp1(model)
    params = adapter_parameters(model, adapter_name)
    copy = any(is_zero3(p) for p in params)  # the gathered storage is freed when the block ends
    view = view_of(model)
    with gathered(params):
        live = view.adapter_state_dict(adapter_name)
        full = {
            key: tensor.full_tensor() if is_sharded(tensor) else tensor.detach().clone() if copy else tensor
            for key, tensor in live.items()
        }
    return view.tensors_to_save(adapter_name, full)  # the tuner's saved form, from the full tensors


def load_adapter_weights(
    model: nn.Module, directory: str | os.PathLike[str], adapter_name: str = "default", strict: bool = True
) -> LoadReport:
    """Copy the adapter saved in ``directory`` into adapter ``adapter_name`` of a model that DDP,
    FSDP2 or DeepSpeed already wraps; call on every rank.

    The adapter must exist (adapters are added before sharding). FSDP2: each rank copies its
    rows of every tensor. DeepSpeed: pass the engine; ZeRO-3 partitions are gathered, rank
    0's copy is kept, and the ZeRO optimizer's fp32 master weights are refreshed, so the
    next step starts from the loaded values. Checked as ``set_peft_model_state_dict`` checks
    (nothing is copied if anything does not fit). The optimizer's moments are not reset.
    """
    inner = unwrap_model(model)
    configs = _adapter_configs(inner)
    if adapter_name not in configs:
        raise PeftError(
            f"the model has no adapter {adapter_name!r} (it has {sorted(configs)}): add adapters before sharding, "
            "with PeftModel.from_pretrained(base, directory, is_trainable=True) or get_peft_model"
        )
    config, tensors = read_adapter(directory)
    if config.peft_type != configs[adapter_name].peft_type:
        raise PeftError(
            f"{directory} holds a {config.peft_type} adapter; adapter {adapter_name!r} of this model is "
            f"{configs[adapter_name].peft_type}"
        )
    params = adapter_parameters(inner, adapter_name)
    require_engine_for_zero3(model, params, f"load {directory} into adapter {adapter_name!r}")
    with gathered(params, modifier_rank=0):
        report = set_peft_model_state_dict(inner, tensors, adapter_name, strict=strict)
    refresh_master_weights(model)
    return report


# --- saving from every rank ---


def _adapter_configs(model: nn.Module) -> dict[str, PeftConfig]:
    """The stored configs (the same whether ``model`` is a PeftModel or a plain injected module)."""
    return dict(view_of(model).peft_config)


def _broadcast_error(message: str | None) -> str | None:
    """Rank 0's error message (or None) on every rank; also a barrier."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return message
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gathered_embeddings(model: nn.Module, config: PeftConfig, choice: SaveEmbeddings) -> dict[str, Tensor]:
    """The embedding weights ``save_embedding_layers`` asks for, whole (a collective when sharded)."""
    inner = view_of(model).model
    keys = embedding_tensors(inner, config, choice)
    params = {key: inner.get_parameter(key.removeprefix(MODEL_PREFIX)) for key in keys}
    with gathered(params.values()):
        return {key: p.full_tensor() if is_sharded(p) else p.detach().clone() for key, p in params.items()}


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike[str],
    selected_adapters: Sequence[str] | None = None,
    save_embedding_layers: SaveEmbeddings = "auto",
) -> None:
    """Save adapters (default: all) from a DDP-, FSDP2-, DeepSpeed- or un-wrapped model; call on every rank.

    Sharded adapter tensors are gathered on all ranks, rank 0 writes the Hugging Face PEFT
    layout (atomically) and the others write nothing. Every rank returns once the files
    are in place, or raises ``AdapterSaveError`` if rank 0 could not write them.
    ``save_embedding_layers`` as in ``PeftModel.save_pretrained`` (the weights gathered too).
    """
    model = unwrap_model(model)
    configs = _adapter_configs(model)
    names = list(configs) if selected_adapters is None else list(selected_adapters)
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise PeftError(f"cannot save unknown adapters {unknown}; this model has {list(configs)}")
    writer = rank() == 0
    failure: BaseException | None = None
    for name in names:
        tensors = gather_adapter_state_dict(model, name)  # collective: every rank, same order
        tensors.update(_gathered_embeddings(model, configs[name], save_embedding_layers))
        if writer and failure is None:
            try:
                write_adapter(adapter_subdir(save_directory, name), configs[name], tensors)
            except BaseException as exc:  # reported to all ranks below, then re-raised here
                failure = exc
    if writer and failure is None:
        write_model_card(save_directory, {n: configs[n] for n in names}, None)
    message = _broadcast_error(None if failure is None else f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    if message is not None:
        raise AdapterSaveError(f"rank 0 could not save the adapter to {save_directory}: {message}")
