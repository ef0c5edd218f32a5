"""Parameters split across processes (FSDP2 shards, DeepSpeed ZeRO-3 partitions), found without importing either.

Adapters are added to a whole model: a layer sizes its tensors from the base weight, and
the sharding engine must see the adapter's parameters when it wraps the model, or it
neither shards them nor averages their gradients. So adding an adapter to a model that
is already split is refused with one error that says what to do instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from torch import Tensor, nn

from peft_core.errors import AdapterLoadError, AdapterSaveError, PeftError

FSDP2 = "FSDP2"
ZERO3 = "DeepSpeed ZeRO-3"
LOAD_HELPER = "peft_core.integrations.distributed.load_adapter_weights(model, directory)"


def split_by(tensor: Tensor) -> str | None:
    """``FSDP2`` for a ``DTensor``, ``DeepSpeed ZeRO-3`` for a parameter ZeRO-3 manages, else None."""
    dtensor = sys.modules.get("torch.distributed.tensor")  # no DTensor exists unless this was imported
    if dtensor is not None and isinstance(tensor, dtensor.DTensor):
        return FSDP2
    if hasattr(tensor, "ds_id"):  # every parameter deepspeed.zero.Init or a ZeRO-3 engine converted
        return ZERO3
    return None


def is_partitioned_now(tensor: Tensor) -> bool:
    """Whether this process lacks part of ``tensor``'s values now: a ``DTensor``, or a ZeRO-3
    parameter outside ``GatheredParameters`` (its data is an empty placeholder, ``ds_numel`` the size)."""
    kind = split_by(tensor)
    return kind == FSDP2 or (kind == ZERO3 and tensor.numel() != getattr(tensor, "ds_numel", tensor.numel()))


def refuse_split_model(model: nn.Module, action: str) -> None:
    """Raise ``PeftError`` if any parameter of ``model`` is an FSDP2 shard or managed by ZeRO-3."""
    split = [(name, kind) for name, param in model.named_parameters() if (kind := split_by(param)) is not None]
    if not split:
        return
    kinds = sorted({kind for _, kind in split})
    raise PeftError(
        f"cannot {action}: this model's parameters are already split across processes by {' and '.join(kinds)} "
        f"({len(split)} of them, e.g. {split[0][0]}), so a new adapter would be neither sharded nor synchronised. "
        "Add and load adapters on the whole model first (get_peft_model, or PeftModel.from_pretrained(base, "
        "directory, is_trainable=True)), then shard it (shard_model, accelerator.prepare, deepspeed.initialize); "
        "with ZeRO-3, build the base model outside deepspeed.zero.Init. To restore saved weights into an adapter "
        f"the split model already has, call {LOAD_HELPER} on every rank"
    )


def refuse_ungathered(params: Iterable[Tensor], adapter_name: str, *, saving: bool) -> None:
    """Raise if any of the adapter's parameters is a ZeRO-3 partition that is not gathered now.

    Saving raises ``AdapterSaveError`` (what is here are empty placeholders, the failure
    that writes 0-element checkpoints), loading ``AdapterLoadError``; both name the helper
    that gathers.
    """
    count = sum(1 for p in params if split_by(p) == ZERO3 and is_partitioned_now(p))
    if not count:
        return
    what = f"adapter {adapter_name!r} is partitioned by DeepSpeed ZeRO-3 ({count} tensors): this process holds empty "
    if saving:
        raise AdapterSaveError(
            what + "placeholders, not its values. Call peft_core.integrations.distributed.save_pretrained(model, "
            "directory) on every rank (it gathers the adapter with deepspeed.zero.GatheredParameters; rank 0 writes), "
            "or gather_adapter_state_dict(model) for the tensors"
        )
    raise AdapterLoadError(
        what + f"placeholders, so a checkpoint cannot be copied in directly. Call {LOAD_HELPER} on every rank with "
        "the DeepSpeed engine: it gathers the partitions, loads, and refreshes the optimizer's master weights"
    )
