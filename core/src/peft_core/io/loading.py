"""Adapter state dicts under their checkpoint keys: reading them off a model, checking and
loading a checkpoint into one (all checked before anything is copied)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from peft_core.contract.layer import adapter_layers, key_paths
from peft_core.contract.tuner import MODEL_PREFIX
from peft_core.engine import TunedModel, unwrap_model, view_of
from peft_core.engine.partitioning import refuse_ungathered
from peft_core.errors import AdapterLoadError, AdapterSaveError, PeftError
from peft_core.io.checkpoint import is_sharded
from peft_core.io.hf_compat import normalize_checkpoint_keys

DEFAULT_ADAPTER = "default"


def _is_plain(model: nn.Module) -> bool:
    """A module with injected adapters, not a ``PeftModel``: its keys carry no ``base_model.model.``."""
    model = unwrap_model(model)
    return not isinstance(model, TunedModel) and not isinstance(model._modules.get("base_model"), TunedModel)


def adapter_tensors(model: nn.Module, adapter_name: str = DEFAULT_ADAPTER) -> dict[str, Tensor]:
    """Live tensors of one adapter under their checkpoint keys (``base_model.model.<path>.lora_A.weight``)."""
    try:
        return view_of(model).adapter_state_dict(adapter_name)
    except PeftError as exc:
        raise AdapterLoadError(str(exc)) from None


def get_peft_model_state_dict(
    model: nn.Module,
    adapter_name: str = DEFAULT_ADAPTER,
    *,
    state_dict: Mapping[str, Tensor] | None = None,
    unwrap_compiled: bool = False,
) -> dict[str, Tensor]:
    """The adapter's tensors as saved (detached, not copied), without the adapter name in the keys.

    For a ``PeftModel`` the keys are the checkpoint's (``base_model.model.<path>...``); for a
    plain module with injected adapters they are relative to it, as Hugging Face PEFT gives them.
    Hugging Face PEFT's keywords: ``state_dict`` (a full ``model.state_dict()``, e.g. gathered
    by a trainer) to take the tensors from; ``unwrap_compiled`` is accepted (``torch.compile``
    wrappers are always looked through). Its second positional argument is ``state_dict``,
    here ``adapter_name``: pass both by keyword.
    """
    if state_dict is not None:
        tensors = select_adapter_state_dict(model, state_dict, adapter_name)
    else:
        try:
            tensors = view_of(model).tensors_to_save(adapter_name)
        except AdapterSaveError:
            raise  # ungathered ZeRO-3 partitions: the error names the gathering helper
        except PeftError as exc:
            raise AdapterLoadError(str(exc)) from None
    if _is_plain(model):
        return {key.removeprefix(MODEL_PREFIX): tensor for key, tensor in tensors.items()}
    return tensors


def as_checkpoint_keys(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` keyed as a checkpoint: keys relative to a plain module get ``base_model.model.``,
    Hugging Face-only aliases are renamed (see ``hf_compat``)."""
    if _is_plain(model):  # no model-level adapters here: every key belongs under the model
        state_dict = {k if k.startswith(MODEL_PREFIX) else MODEL_PREFIX + k: v for k, v in state_dict.items()}
    return normalize_checkpoint_keys(view_of(model).model, state_dict)


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

    @property
    def missing_keys(self) -> list[str]:
        """Hugging Face PEFT's (and torch's) name for ``missing``."""
        return self.missing

    @property
    def unexpected_keys(self) -> list[str]:
        """Hugging Face PEFT's (and torch's) name for ``unexpected``."""
        return self.unexpected

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


def _rank_dims(view: TunedModel, adapter_name: str) -> dict[str, int]:
    """Checkpoint key -> the dimension holding the adapter's rank, for layers that declare it."""
    dims: dict[str, int] = {}
    paths = key_paths(view.model)
    for _, layer in adapter_layers(view.model):
        for key in layer.adapter_state_dict(adapter_name):
            if key in layer.rank_dims:
                dims[f"{MODEL_PREFIX}{paths[id(layer)]}.{key}"] = layer.rank_dims[key]
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


def _base_parameters(view: TunedModel) -> dict[str, Tensor]:
    """Base parameters under checkpoint keys (tied weights under every name, wrappers' levels left out)."""
    paths = key_paths(view.model)
    found: dict[str, Tensor] = {}
    for module in view.model.modules(remove_duplicate=False):
        for name, param in module._parameters.items():
            if param is not None:
                found[MODEL_PREFIX + (f"{paths[id(module)]}.{name}" if paths[id(module)] else name)] = param
    return found


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], adapter_name: str) -> LoadReport:
    """Compare a checkpoint with the model's adapter without changing anything.

    Keys, shapes (a shape that differs only in the rank dimension is named a rank
    mismatch), dtypes (floating point into floating point, of a supported kind) and
    values (finite, and representable in the adapter's dtype).
    """
    view = view_of(model)
    state_dict = as_checkpoint_keys(model, state_dict)
    if adapter_name in view.peft_config:
        refuse_ungathered(view.adapter_parameters(adapter_name), adapter_name, saving=False)
    expected = adapter_tensors(view, adapter_name)
    rank_dims = _rank_dims(view, adapter_name)
    params = _base_parameters(view)
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
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    adapter_name: str = DEFAULT_ADAPTER,
    strict: bool = True,
    *,
    ignore_mismatched_sizes: bool = False,
    low_cpu_mem_usage: bool = False,
) -> LoadReport:
    """Copy a checkpoint's tensors into adapter ``adapter_name`` of ``model``.

    Everything is checked first (see ``check_state_dict``); any difference raises
    ``AdapterLoadError`` listing it, and the model is not touched. Without ``strict``,
    missing and unexpected keys are a warning instead and the rest is loaded.
    Floating-point tensors are cast to the adapter's dtype. Returns the report
    (``missing_keys``/``unexpected_keys``). Hugging Face PEFT's keywords:
    ``ignore_mismatched_sizes=True`` leaves tensors whose shape differs out, with a warning
    naming them; ``low_cpu_mem_usage`` is accepted (an adapter injected with it holds
    uninitialised tensors on the model's device, which this fills).
    """
    report = check_state_dict(model, state_dict, adapter_name)
    if ignore_mismatched_sizes and report.mismatched:
        skipped = [m for m in report.mismatched if "shape differs" in m or m.split(": ")[1].startswith("rank ")]
        if skipped:
            warnings.warn(f"ignore_mismatched_sizes: not loaded (shapes differ): {skipped}", UserWarning, stacklevel=2)
            report.mismatched = [m for m in report.mismatched if m not in skipped]
            skipped_keys = {m.split(": ")[0] for m in skipped}
            state_dict = {k: v for k, v in as_checkpoint_keys(model, state_dict).items() if k not in skipped_keys}
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
    view = view_of(model)
    state_dict = as_checkpoint_keys(model, state_dict)
    targets = adapter_tensors(view, adapter_name)
    params = _base_parameters(view) if report.base_keys else {}
    with torch.no_grad():
        for key, value in state_dict.items():
            target = targets.get(key, params.get(key) if key in report.base_keys else None)
            if target is not None:
                _copy_into(target, value)


def _copy_into(target: Tensor, value: Tensor) -> None:
    """``target.copy_(value)``; into an FSDP2 ``DTensor`` shard, this rank's piece of ``value`` (no communication)."""
    if not is_sharded(target):
        target.copy_(value)
        return
    from torch.distributed.tensor import distribute_tensor  # only reached when DTensors exist

    piece = distribute_tensor(value.to(target.dtype), target.device_mesh, target.placements, src_data_rank=None)
    target.to_local().copy_(piece.to_local())


def adapter_key_map(model: nn.Module, adapter_name: str = DEFAULT_ADAPTER) -> dict[str, str]:
    """Map ``model.state_dict()`` names to the adapter's checkpoint keys, for one adapter.

    Found by tensor identity, not by editing names: ``base_model.model.lin.lora_A.default.weight``
    maps to ``base_model.model.lin.lora_A.weight`` because it is that tensor. Wrappers
    (DDP's ``module.``, FSDP1's ``_fsdp_wrapped_module.``, ``torch.compile``'s ``_orig_mod.``)
    do not change the keys.
    """
    live = {id(tensor): key for key, tensor in adapter_tensors(model, adapter_name).items()}
    return {name: live[id(tensor)] for name, tensor in model.state_dict(keep_vars=True).items() if id(tensor) in live}


def select_adapter_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], adapter_name: str = DEFAULT_ADAPTER
) -> dict[str, Tensor]:
    """Pick one adapter's tensors out of a full model state dict and key them as saved.

    ``state_dict`` is named as ``model.state_dict()`` names it: what ``accelerator.get_state_dict``
    or ``torch.distributed.checkpoint.state_dict.get_model_state_dict(..., full_state_dict=True)``
    return. Raises ``AdapterSaveError`` naming the adapter tensors it lacks.
    """
    key_map = adapter_key_map(model, adapter_name)
    expected = set(adapter_tensors(model, adapter_name))
    selected = {key: state_dict[name] for name, key in key_map.items() if name in state_dict}
    missing = sorted(expected - set(selected))
    if missing:
        raise AdapterSaveError(
            f"the given state_dict lacks {len(missing)} tensors of adapter {adapter_name!r} "
            f"(e.g. {missing[:3]}); pass the full state dict of this model, named as model.state_dict() names it"
        )
    sharded = sorted(key for key, tensor in selected.items() if is_sharded(tensor))
    if sharded:
        raise AdapterSaveError(
            f"the given state_dict holds sharded DTensors ({sharded[:3]}); gather it with full_state_dict=True"
        )
    return selected
