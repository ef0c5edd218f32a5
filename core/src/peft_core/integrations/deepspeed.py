"""DeepSpeed ZeRO: whole adapter tensors out of ZeRO-3 partitions, and changes that the engine keeps.

Under ZeRO-3 each rank holds a slice of every parameter that the engine (or
``deepspeed.zero.Init``) converted; in between forward passes ``param.data`` is an empty
placeholder and ``param.ds_numel`` the real size. ``gathered`` makes chosen parameters
whole for a block, the DeepSpeed way (``deepspeed.zero.GatheredParameters``), and does
nothing for parameters ZeRO-3 does not manage, so the same code runs under DDP, ZeRO-1/2
and in one process.

Under every ZeRO stage the optimizer updates its own fp32 copy of each rank's slice and
writes it back over the parameters at each step: a value put into a parameter in place
(a loaded checkpoint, a projection done in ``on_step_end``) is lost at the next step unless
the copy is refreshed from the parameters (``refresh_master_weights``).

deepspeed is imported only when a ZeRO-3 parameter is present.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn

from peft_core.engine import unwrap_model, view_of
from peft_core.engine.partitioning import ZERO3, split_by
from peft_core.errors import PeftError

__all__ = [
    "adapter_parameters",
    "gathered",
    "is_zero3",
    "refresh_master_weights",
    "require_engine_for_zero3",
    "update_and_allocate",
]


def is_zero3(param: nn.Parameter) -> bool:
    """Whether DeepSpeed ZeRO-3 manages ``param`` (partitioned, or persistent but converted)."""
    return split_by(param) == ZERO3


def adapter_parameters(model: nn.Module, adapter_name: str) -> list[nn.Parameter]:
    """The parameters adapter ``adapter_name``'s tensors come from (``TunedModel.adapter_parameters``).

    What saving must gather: its layers' tensors, its model-level module (a tuner that
    computes its saved tensors, as p-tuning its encoder's output, computes them from it)
    and the base tensors it trains.
    """
    return view_of(model).adapter_parameters(adapter_name)


@contextmanager
def gathered(params: Iterable[nn.Parameter], modifier_rank: int | None = None) -> Iterator[None]:
    """Inside the block every ZeRO-3 parameter among ``params`` holds its whole value on every rank.

    A collective under ZeRO-3: call it on every rank with the same parameters.
    ``modifier_rank=None``: reading only. ``modifier_rank=r``: rank ``r``'s values are
    kept when the block ends (broadcast, then partitioned again); give it when the block
    changes the parameters. Without ZeRO-3 parameters this does nothing.
    """
    partitioned = [p for p in params if is_zero3(p)]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank):
        yield


def refresh_master_weights(engine: nn.Module) -> bool:
    """Copy the engine's parameters into its ZeRO optimizer's fp32 master slices; returns whether it had any.

    Call it after changing parameters in place outside ``engine.step()``; without it the next
    step writes the old values back. ``engine`` is what ``deepspeed.initialize`` or
    ``accelerator.prepare`` returned (a ``DeepSpeedEngine``).
    """
    refresh = getattr(getattr(engine, "optimizer", None), "refresh_fp32_params", None)
    if not callable(refresh):
        return False
    refresh()
    return True


def _optimizer_keeps_master_weights(engine: nn.Module) -> bool:
    """Whether ``engine`` is a DeepSpeed engine with a ZeRO optimizer (fp32 master slices)."""
    return callable(getattr(getattr(engine, "optimizer", None), "refresh_fp32_params", None))


def require_engine_for_zero3(engine: nn.Module, params: Iterable[nn.Parameter], action: str) -> None:
    """Refuse to change ZeRO-3 parameters in place when ``engine`` gives no way to refresh the master weights."""
    if any(is_zero3(p) for p in params) and not _optimizer_keeps_master_weights(engine):
        raise PeftError(
            f"cannot {action}: the adapter is partitioned by DeepSpeed ZeRO-3, and the optimizer's fp32 master "
            "weights would overwrite the change at the next step. Pass the DeepSpeedEngine that "
            "deepspeed.initialize (or accelerator.prepare) returned, not the module inside it"
        )


def update_and_allocate(engine: nn.Module, global_step: int) -> None:
    """``PeftModel.update_and_allocate(global_step)`` for a model inside a DeepSpeed engine; call on every rank.

    The tuner's ``on_step_end`` sees whole tensors (ZeRO-3 partitions are gathered, rank
    0's result is kept) and what it changes reaches the optimizer's master weights. For
    tuners without ``on_step_end`` this does nothing.
    """
    model = unwrap_model(engine)
    step_end = getattr(model, "update_and_allocate", None)
    if not callable(step_end):
        raise PeftError(f"update_and_allocate needs a PeftModel inside the engine, got {type(model).__name__}")
    if "on_step_end" not in view_of(model).model_hooks:
        return
    trainable = [p for p in model.parameters() if p.requires_grad]
    require_engine_for_zero3(engine, trainable, "run on_step_end")
    with gathered(trainable, modifier_rank=0):
        step_end(global_step)
    refresh_master_weights(engine)
