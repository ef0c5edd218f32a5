"""Adapter state dicts in the Hugging Face PEFT key format, found by walking the module tree."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from peft_core.config import PeftConfig
from peft_core.errors import AdapterLoadError
from peft_core.layer import adapter_layers


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def adapter_config(model: nn.Module, adapter_name: str) -> PeftConfig:
    """The config of ``adapter_name`` as recorded in the model's adapter layers."""
    for _, layer in adapter_layers(model):
        if adapter_name in layer.adapter_configs:
            return layer.adapter_configs[adapter_name]
    known = sorted({n for _, layer in adapter_layers(model) for n in layer.adapter_configs})
    raise AdapterLoadError(f"the model has no adapter {adapter_name!r}; it has {known}")


def adapter_tensors(model: nn.Module, adapter_name: str = "default") -> dict[str, Tensor]:
    """Live tensors of one adapter, keyed as its checkpoint names them (relative to ``model``).

    Keys carry no adapter name: ``<module path>.lora_A.weight`` and the like; modules in
    ``modules_to_save`` under their own parameter names; extra trained base parameters
    (biases) under their own paths.
    """
    from peft_core.plugins import registry

    config = adapter_config(model, adapter_name)
    tensors: dict[str, Tensor] = {}
    for path, layer in adapter_layers(model):
        for key, tensor in layer.adapter_state_dict(adapter_name).items():
            tensors[_join(path, key)] = tensor
    tuner = registry.tuner_for_config(config)()
    tensors.update(tuner.extra_trainable_parameters(model, config))
    return tensors


def get_peft_model_state_dict(model: nn.Module, adapter_name: str = "default") -> dict[str, Tensor]:
    """The adapter's tensors (detached, not copied), ready to save; keys as in adapter_tensors."""
    return {key: tensor.detach() for key, tensor in adapter_tensors(model, adapter_name).items()}


@dataclass
class LoadReport:
    """How a checkpoint's tensors compare with what the model expects."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (shape, dtype) vs model (...)"
    base_keys: list[str] = field(default_factory=list)  # base-layer tensors also loaded

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        lines = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("mismatched", self.mismatched),
        ):
            if keys:
                shown = "\n    ".join(keys[:limit]) + (
                    f"\n    ... {len(keys) - limit} more" if len(keys) > limit else ""
                )
                lines.append(f"  {len(keys)} {label}:\n    {shown}")
        return "\n".join(lines)


def _describe(tensor: Tensor) -> str:
    return f"({tuple(tensor.shape)}, {str(tensor.dtype).removeprefix('torch.')})"


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], adapter_name: str) -> LoadReport:
    """Compare a checkpoint with the model's adapter without changing anything."""
    expected = adapter_tensors(model, adapter_name)
    params = dict(model.named_parameters())
    report = LoadReport()
    for key, value in state_dict.items():
        target = expected.get(key)
        if target is None and ".base_layer." in key and key in params:
            target = params[key]  # Hugging Face PEFT saves resized embeddings this way
            report.base_keys.append(key)
        if target is None:
            report.unexpected.append(key)
        elif (
            not isinstance(value, Tensor)
            or value.shape != target.shape
            or value.numel() == 0
            or (value.is_floating_point() != target.is_floating_point())
        ):
            got = _describe(value) if isinstance(value, Tensor) else type(value).__name__
            report.mismatched.append(f"{key}: checkpoint {got} vs model {_describe(target)}")
    report.missing = sorted(set(expected) - set(state_dict))
    return report


def set_peft_model_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], adapter_name: str = "default", strict: bool = True
) -> LoadReport:
    """Copy a checkpoint's tensors into adapter ``adapter_name`` of ``model``.

    Everything is checked first (keys, shapes, kinds of dtype); with ``strict`` any
    difference raises ``AdapterLoadError`` listing it and the model is not touched.
    Without ``strict`` the matching tensors are loaded and the report says what was not.
    Floating-point tensors are cast to the adapter's dtype.
    """
    report = check_state_dict(model, state_dict, adapter_name)
    if strict and not report.ok:
        raise AdapterLoadError(
            f"checkpoint does not fit adapter {adapter_name!r}; nothing was loaded:\n{report.describe()}\n"
            "Check that the adapter was trained for this model architecture and config."
        )
    if not report.ok:
        warnings.warn(f"loaded adapter {adapter_name!r} non-strictly; skipped:\n{report.describe()}", stacklevel=2)
    targets = adapter_tensors(model, adapter_name)
    params = dict(model.named_parameters())
    bad = {line.split(":", 1)[0] for line in report.mismatched}
    with torch.no_grad():
        for key, value in state_dict.items():
            target = targets.get(key, params.get(key) if key in report.base_keys else None)
            if target is not None and key not in bad:
                target.copy_(value)
    return report
