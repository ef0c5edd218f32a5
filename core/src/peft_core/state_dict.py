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


# Floating-point dtypes an adapter checkpoint may hold (cast to the adapter's dtype on load).
LOADABLE_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _rank_dims(model: nn.Module, adapter_name: str) -> dict[str, int]:
    """Checkpoint key -> the dimension holding the adapter's rank, for layers that declare it."""
    dims: dict[str, int] = {}
    for path, layer in adapter_layers(model):
        for key in layer.adapter_state_dict(adapter_name):
            if key in layer.rank_dims:
                dims[_join(path, key)] = layer.rank_dims[key]
    return dims


def _misfit(value: object, target: Tensor, rank_dim: int | None) -> str | None:
    """Why checkpoint tensor ``value`` cannot be loaded into ``target``; None if it can."""
    if not isinstance(value, Tensor):
        return f"a {type(value).__name__}, not a tensor"
    if value.numel() == 0 and target.numel() != 0:
        return "empty (0-element) tensor: saved from sharded (ZeRO-3/FSDP) weights without gathering them?"
    if value.shape != target.shape:
        if rank_dim is not None and value.dim() == target.dim() > rank_dim:
            others = [i for i in range(value.dim()) if i != rank_dim]
            if all(value.shape[i] == target.shape[i] for i in others):
                return f"rank {value.shape[rank_dim]} in checkpoint vs {target.shape[rank_dim]} in config"
        return "shape differs"
    if value.is_floating_point() != target.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        return "dtype cannot be loaded into the model's"
    if not value.is_floating_point():
        return None
    if value.dtype not in LOADABLE_FLOATS:
        return f"dtype not supported for adapter weights (use one of {[str(d) for d in LOADABLE_FLOATS]})"
    if not bool(torch.isfinite(value).all()):
        return f"{int((~torch.isfinite(value)).sum())} non-finite values (NaN/inf)"
    limit = torch.finfo(target.dtype).max
    if torch.finfo(value.dtype).max > limit and bool((value.abs() > limit).any()):
        return f"values beyond the range of {str(target.dtype).removeprefix('torch.')} (max {limit:.3g})"
    return None


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], adapter_name: str) -> LoadReport:
    """Compare a checkpoint with the model's adapter without changing anything.

    Keys, shapes (a shape that differs only in the rank dimension is named a rank
    mismatch), dtypes (floating point into floating point, of a supported kind) and
    values (finite, and representable in the adapter's dtype).
    """
    from peft_core.compat import normalize_checkpoint_keys

    state_dict = normalize_checkpoint_keys(model, state_dict)
    expected = adapter_tensors(model, adapter_name)
    rank_dims = _rank_dims(model, adapter_name)
    params = dict(model.named_parameters(remove_duplicate=False))  # tied weights under every name
    report = LoadReport()
    for key, value in state_dict.items():
        target = expected.get(key)
        if target is None and ".base_layer." in key and key in params:
            target = params[key]  # Hugging Face PEFT saves resized embeddings this way
            report.base_keys.append(key)
        if target is None:
            report.unexpected.append(key)
        elif (problem := _misfit(value, target, rank_dims.get(key))) is not None:
            got = _describe(value) if isinstance(value, Tensor) else type(value).__name__
            report.mismatched.append(f"{key}: {problem}: checkpoint {got} vs model {_describe(target)}")
    report.missing = sorted(set(expected) - set(state_dict))
    return report


def raise_or_warn(report: LoadReport, adapter_name: str, strict: bool) -> None:
    """The one error (or, non-strict, warning) for a checkpoint that does not fit.

    Tensors that are present but do not fit are an error even when not ``strict``: they
    cannot be loaded, and skipping them would leave a different adapter than the one saved.
    """
    if report.ok:
        return
    if strict or report.mismatched:
        raise AdapterLoadError(
            f"checkpoint does not fit adapter {adapter_name!r}; nothing was loaded:\n{report.describe()}\n"
            "Check that the adapter was trained for this model architecture and config."
            + ("" if strict else " (strict=False tolerates missing and unexpected keys, not tensors that do not fit.)")
        )
    warnings.warn(f"loaded adapter {adapter_name!r} non-strictly; skipped:\n{report.describe()}", stacklevel=3)


def set_peft_model_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], adapter_name: str = "default", strict: bool = True
) -> LoadReport:
    """Copy a checkpoint's tensors into adapter ``adapter_name`` of ``model``.

    Everything is checked first (see ``check_state_dict``); any difference raises
    ``AdapterLoadError`` listing it, and the model is not touched. Without ``strict``,
    missing and unexpected keys are a warning instead and the rest is loaded.
    Floating-point tensors are cast to the adapter's dtype.
    """
    report = check_state_dict(model, state_dict, adapter_name)
    raise_or_warn(report, adapter_name, strict)
    load_checked_state_dict(model, state_dict, adapter_name, report)
    return report


def load_checked_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], adapter_name: str, report: LoadReport
) -> None:
    """Copy tensors that ``check_state_dict`` (``report``) found loadable, without checking again.

    ``report`` may come from a structurally identical model (the meta-device skeleton of a
    load's pre-check): keys, shapes and dtypes are the same there.
    """
    from peft_core.compat import normalize_checkpoint_keys

    state_dict = normalize_checkpoint_keys(model, state_dict)
    targets = adapter_tensors(model, adapter_name)
    params = dict(model.named_parameters(remove_duplicate=False))  # tied weights under every name
    with torch.no_grad():
        for key, value in state_dict.items():
            target = targets.get(key, params.get(key) if key in report.base_keys else None)
            if target is not None:
                target.copy_(value)
