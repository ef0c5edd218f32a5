"""``get_layer_status`` / ``get_model_status``: the adapter state of a model, as Hugging Face PEFT reports it.

Field names and meanings are the incumbent's (``TunerLayerStatus``, ``TunerModelStatus``);
"irregular" marks a value that differs between layers (a model in an inconsistent state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from peft_core.contract.layer import AdapterLayer, adapter_layers
from peft_core.engine import view_of

Irregular = Literal["irregular"]


@dataclass
class TunerLayerStatus:
    """One adapter layer: its path, type, and the state of its adapters."""

    name: str
    module_type: str
    enabled: bool
    active_adapters: list[str]
    merged_adapters: list[str]
    requires_grad: dict[str, bool | Irregular]
    available_adapters: list[str]
    devices: dict[str, list[str]]
    quantization_backend: str | None


@dataclass
class TunerModelStatus:
    """The whole model: the layers' states folded together ("irregular" where they differ)."""

    base_model_type: str
    adapter_model_type: str
    peft_types: dict[str, str]
    trainable_params: int
    total_params: int
    num_adapter_layers: int
    enabled: bool | Irregular
    active_adapters: list[str] | Irregular
    merged_adapters: list[str] | Irregular
    requires_grad: dict[str, bool | Irregular]
    available_adapters: list[str]
    devices: dict[str, list[str]]
    quantization_backend: str | Irregular | None


def _requires_grad(layer: AdapterLayer, name: str) -> bool | Irregular:
    flags = {p.requires_grad for p in layer.adapter_parameters(name)}
    return flags.pop() if len(flags) == 1 else "irregular"


def _quantization(layer: AdapterLayer) -> str | None:
    module = type(layer.base_layer).__module__
    return "bnb" if module.startswith("bitsandbytes") else None


def get_layer_status(model: nn.Module) -> list[TunerLayerStatus]:
    """The status of every adapter layer of a ``PeftModel`` (or a module with injected adapters);
    names are paths in ``PeftModel.base_model`` (``model.layers.0.q_proj`` is ``model.model.layers...``)."""
    status = []
    for path, layer in adapter_layers(view_of(model).model):
        names = layer.adapter_names
        status.append(
            TunerLayerStatus(
                name=f"model.{path}",  # relative to PeftModel.base_model, as the incumbent names them
                module_type=f"{type(layer).__module__.split('.')[0]}.{type(layer).__name__}",
                enabled=not layer.disabled,
                active_adapters=list(layer.active_adapters),
                merged_adapters=list(layer.merged_adapters),
                requires_grad={name: _requires_grad(layer, name) for name in names},
                available_adapters=sorted(names),
                devices={name: sorted({str(p.device.type) for p in layer.adapter_parameters(name)}) for name in names},
                quantization_backend=_quantization(layer),
            )
        )
    return status


def _fold(values: list[object]) -> object:
    distinct = {repr(v): v for v in values}
    return next(iter(distinct.values())) if len(distinct) == 1 else "irregular"


def get_model_status(model: nn.Module) -> TunerModelStatus:
    """The adapter state of the whole model (see ``get_layer_status`` for one layer each)."""
    tuned = view_of(model)
    layers = get_layer_status(model)  # modules_to_save wrappers count, as in the incumbent
    names = sorted(tuned.peft_config)
    parameters = list(model.parameters())
    grads: dict[str, bool | Irregular] = {}
    devices: dict[str, list[str]] = {}
    for name in names:
        flags = {s.requires_grad[name] for s in layers if name in s.requires_grad}
        grads[name] = flags.pop() if len(flags) == 1 else "irregular"
        devices[name] = sorted({d for s in layers for d in s.devices.get(name, [])})
    tuner = type(tuned.tuner).__name__ if names else "None"
    return TunerModelStatus(
        base_model_type=type(tuned.model).__name__,
        adapter_model_type=tuner,
        peft_types={name: config.peft_type for name, config in tuned.peft_config.items()},
        trainable_params=sum(p.numel() for p in parameters if p.requires_grad),
        total_params=sum(p.numel() for p in parameters),
        num_adapter_layers=len(layers),
        enabled=_fold([s.enabled for s in layers]) if layers else not tuned.disabled,  # type: ignore[arg-type]
        active_adapters=_fold([s.active_adapters for s in layers]) if layers else tuned.active_adapters,  # type: ignore[arg-type]
        merged_adapters=_fold([s.merged_adapters for s in layers]) if layers else [],  # type: ignore[arg-type]
        requires_grad=grads,
        available_adapters=names,
        devices=devices,
        quantization_backend=_fold([s.quantization_backend for s in layers]) if layers else None,  # type: ignore[arg-type]
    )
