"""Hotswapping: replace an adapter's weights in place from a checkpoint, without re-injection.

The swapped-in adapter must target the same modules. Parameters keep their identity and
shape, so a ``torch.compile``d model keeps its compiled graph. Methods whose shapes
depend on a hyper-parameter (LoRA's rank) need a one-time ``prepare_for_hotswap(model,
max_rank)`` before compiling: it pads every adapter to ``max_rank`` with exact zeros and
turns Python-number scalings into tensors, so later swaps change values only.

Adapter layers that implement ``HotswapLayer`` (LoRA) do their own checks and copies;
for any other adapter layer (IA3, ``modules_to_save``) the checkpoint's tensors must have
the live tensors' shapes and are copied in place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from peft_core.checkpoint import read_adapter
from peft_core.config import PeftConfig
from peft_core.errors import AdapterLoadError, PeftError
from peft_core.layer import AdapterLayer, adapter_layers

_PREFIX = "base_model.model."


@runtime_checkable
class HotswapLayer(Protocol):
    """What an adapter layer implements when swapping needs more than a same-shape copy."""

    def prepare_hotswap(self, max_rank: int) -> None:
        """Make every adapter of this layer swappable for one of rank <= ``max_rank``."""

    def check_hotswap(self, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
        """Raise ``PeftError`` if ``tensors`` (keys as in ``adapter_state_dict``) cannot be swapped in."""

    def hotswap(self, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
        """Copy ``tensors`` into the adapter in place (after ``check_hotswap`` passed)."""


def _inner(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    inner = get_base() if callable(get_base) else model
    assert isinstance(inner, nn.Module)
    return inner


def prepare_for_hotswap(model: nn.Module, max_rank: int) -> None:
    """Once, before ``torch.compile``: let adapters of any rank <= ``max_rank`` be swapped in
    later without recompiling. Outputs do not change (the padding is exact zeros)."""
    if max_rank <= 0:
        raise PeftError(f"max_rank must be > 0, got {max_rank}")
    for _, layer in adapter_layers(_inner(model)):
        if isinstance(layer, HotswapLayer):
            layer.prepare_hotswap(max_rank)


def hotswap_adapter(model: nn.Module, adapter_dir: str | os.PathLike[str], adapter_name: str = "default") -> None:
    """Replace adapter ``adapter_name``'s weights with those saved in ``adapter_dir``.

    ``model`` is a ``PeftModel`` or a module with injected adapters. Everything is checked
    before anything is copied: a checkpoint that does not fit raises ``AdapterLoadError``
    and leaves the model as it was.
    """
    config, tensors = read_adapter(adapter_dir)
    hotswap_adapter_from_state_dict(model, tensors, config, adapter_name)


def hotswap_adapter_from_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], config: PeftConfig, adapter_name: str = "default"
) -> None:
    """``hotswap_adapter`` for tensors already in memory (keys as saved)."""
    from peft_core.plugins import registry

    inner = _inner(model)
    layers = {path: layer for path, layer in adapter_layers(inner) if adapter_name in layer.adapter_configs}
    if not layers:
        raise AdapterLoadError(f"the model has no adapter {adapter_name!r} to hotswap; load it first")
    current = next(iter(layers.values())).adapter_configs[adapter_name]
    if config.peft_type != current.peft_type:
        raise AdapterLoadError(f"cannot hotswap a {config.peft_type} adapter into {current.peft_type} adapter")
    tuner = registry.tuner_for_config(config)()
    config = config.model_copy(update={"inference_mode": current.inference_mode})
    per_layer = _split_by_layer(state_dict, layers)
    resolved = {path: tuner.resolve_config(config, path) for path in layers}
    try:
        for path, layer in layers.items():
            _check(layer, adapter_name, per_layer[path], resolved[path])
    except PeftError as exc:
        raise AdapterLoadError(f"{path}: {exc}; nothing was swapped") from None
    with torch.no_grad():
        for path, layer in layers.items():
            if isinstance(layer, HotswapLayer):
                layer.hotswap(adapter_name, per_layer[path], resolved[path])
            else:
                live = layer.adapter_state_dict(adapter_name)
                for key, tensor in per_layer[path].items():
                    live[key].copy_(tensor)
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and adapter_name in peft_config:
        peft_config[adapter_name] = config


def _split_by_layer(
    state_dict: Mapping[str, Tensor], layers: Mapping[str, AdapterLayer]
) -> dict[str, dict[str, Tensor]]:
    """Checkpoint tensors grouped by adapter layer, keyed relative to it; an error for the rest."""
    per_layer: dict[str, dict[str, Tensor]] = {path: {} for path in layers}
    # Longest paths first, so "a.b" is not taken for the layer "a".
    ordered = sorted(layers, key=len, reverse=True)
    stray = []
    for key, tensor in state_dict.items():
        name = key.removeprefix(_PREFIX)
        path = next((p for p in ordered if name.startswith(p + ".")), None)
        if path is None:
            stray.append(key)
        else:
            per_layer[path][name[len(path) + 1 :]] = tensor
    if stray:
        raise AdapterLoadError(
            f"checkpoint tensors {stray[:5]} belong to no module of the adapter: a hotswap needs the same target "
            "modules (and no trained biases); use load_adapter() for a different adapter"
        )
    return per_layer


def _check(layer: AdapterLayer, adapter_name: str, tensors: Mapping[str, Tensor], config: PeftConfig) -> None:
    if isinstance(layer, HotswapLayer):
        layer.check_hotswap(adapter_name, tensors, config)
        return
    live = layer.adapter_state_dict(adapter_name)
    if set(tensors) != set(live):
        raise PeftError(f"checkpoint has {sorted(tensors)}, the adapter has {sorted(live)}")
    wrong = [key for key, value in tensors.items() if value.shape != live[key].shape]
    if wrong:
        raise PeftError(f"shapes differ for {wrong}: a hotswap keeps every tensor's shape")
