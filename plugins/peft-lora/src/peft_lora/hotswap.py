"""LoRA's part of hotswapping (``peft_core.hotswap``): rank padding and in-place swaps.

A LoRA adapter's capacity is the number of rows of its ``A`` parameter; its rank ``r`` is
how many of them hold the adapter (the rest are zeros, which add nothing). Saving and
loading see only the first ``r`` (``LoraLayer.adapter_state_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from peft_core.contract import PeftConfig, PeftError
from peft_lora.config import LoraConfig


class SwappableLayer(Protocol):
    """What a swap reads and writes of a LoRA layer (peft_lora.layer.LoraLayer; a protocol here,
    so that this module does not import the layer that calls it)."""

    r: dict[str, int]
    scaling: dict[str, float | Tensor]
    lora_dropout: nn.ModuleDict
    adapter_configs: dict[str, Any]
    factor_keys: tuple[str, str]

    def lora_factors(self, adapter_name: str) -> tuple[Tensor, Tensor]: ...

    def factor_owners(self, adapter_name: str) -> tuple[tuple[nn.Module, str], tuple[nn.Module, str]]: ...

    def adapter_state_dict(self, adapter_name: str) -> dict[str, Tensor]: ...


def pad_adapter(layer: SwappableLayer, adapter_name: str, max_rank: int | None) -> None:
    """Grow the adapter's ``A`` (dim 0) and ``B`` (dim 1) to ``max_rank`` (None: its rank) with zeros;
    scaling as a tensor."""
    rank = layer.r[adapter_name]
    max_rank = rank if max_rank is None else max_rank
    if rank > max_rank:
        raise PeftError(f"adapter {adapter_name!r} has rank {rank} > max_rank {max_rank}; raise max_rank")
    (owner_a, key_a), (owner_b, key_b) = layer.factor_owners(adapter_name)
    for (owner, key), dim in (((owner_a, key_a), 0), ((owner_b, key_b), 1)):
        old = _get(owner, key)
        if old.shape[dim] < max_rank:
            shape = list(old.shape)
            shape[dim] = max_rank
            padded = old.new_zeros(shape)
            padded.narrow(dim, 0, old.shape[dim]).copy_(old.detach())
            _set(owner, key, nn.Parameter(padded, requires_grad=old.requires_grad))
    for owner, attribute in ((owner_a, "out_features"), (owner_a, "out_channels")):
        if hasattr(owner, attribute):
            setattr(owner, attribute, max_rank)
    for owner, attribute in ((owner_b, "in_features"), (owner_b, "in_channels")):
        if hasattr(owner, attribute):
            setattr(owner, attribute, max_rank)
    scaling = layer.scaling[adapter_name]
    if not isinstance(scaling, Tensor):
        a = layer.lora_factors(adapter_name)[0]
        layer.scaling[adapter_name] = torch.tensor(scaling, dtype=a.dtype, device=a.device)


def _get(owner: nn.Module, key: str) -> Tensor:
    value = owner[key] if isinstance(owner, nn.ParameterDict) else getattr(owner, key)
    assert isinstance(value, Tensor)
    return value


def _set(owner: nn.Module, key: str, value: nn.Parameter) -> None:
    if isinstance(owner, nn.ParameterDict):
        owner[key] = value
    else:
        setattr(owner, key, value)


def _new_factors(layer: SwappableLayer, adapter_name: str, tensors: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    live = layer.adapter_state_dict(adapter_name)
    if set(tensors) != set(live):
        raise PeftError(f"checkpoint has {sorted(tensors)}, the adapter has {sorted(live)}")
    key_a, key_b = layer.factor_keys
    return tensors[key_a].flatten(1), tensors[key_b].flatten(1)


def check_swap(layer: SwappableLayer, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
    """Raise ``PeftError`` unless the checkpoint's factors fit the adapter's parameters."""
    if not isinstance(config, LoraConfig):
        raise PeftError(f"a LoRA adapter takes a LoraConfig, not {type(config).__name__}")
    new_a, new_b = _new_factors(layer, adapter_name, tensors)
    a, b = layer.lora_factors(adapter_name)
    rank = new_a.shape[0]
    if new_b.shape[1] != rank or new_a.shape[1] != a.shape[1] or new_b.shape[0] != b.shape[0]:
        raise PeftError(
            f"checkpoint factors {tuple(new_a.shape)}, {tuple(new_b.shape)} do not fit this layer's "
            f"(r, {a.shape[1]}) and ({b.shape[0]}, r)"
        )
    if rank > a.shape[0]:
        raise PeftError(
            f"the new adapter has rank {rank} but this one holds at most {a.shape[0]}: call "
            f"prepare_for_hotswap(model, max_rank={rank}) (or larger) once, before compiling"
        )


def swap(layer: SwappableLayer, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
    """Copy the checkpoint's factors in place (zero rows past its rank) and take its scaling."""
    assert isinstance(config, LoraConfig)
    new_a, new_b = _new_factors(layer, adapter_name, tensors)
    a, b = layer.lora_factors(adapter_name)
    rank = new_a.shape[0]
    with torch.no_grad():
        a.zero_()
        a[:rank].copy_(new_a)
        b.zero_()
        b[:, :rank].copy_(new_b)
        scaling = layer.scaling[adapter_name]
        if isinstance(scaling, Tensor):
            scaling.fill_(config.scaling())  # in place: a compiled graph reads the new value
        else:
            layer.scaling[adapter_name] = config.scaling()
    layer.r[adapter_name] = rank
    dropout = layer.lora_dropout[adapter_name]
    if isinstance(dropout, nn.Dropout) and config.lora_dropout:
        dropout.p = config.lora_dropout
    elif isinstance(dropout, nn.Dropout) != bool(config.lora_dropout):
        layer.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
    layer.adapter_configs[adapter_name] = config
