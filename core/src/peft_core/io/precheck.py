"""Check that a checkpoint fits a model before the model is touched."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from peft_core.contract.config import PeftConfig
from peft_core.engine import TunedModel
from peft_core.errors import AdapterLoadError, PeftError
from peft_core.io.loading import LoadReport, check_state_dict, raise_or_warn


def meta_skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree whose parameters and buffers hold no data (meta device).

    Shared (tied) parameters stay shared. Costs the module objects only, not the weights.
    """
    memo: dict[int, object] = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device="meta")
    return copy.deepcopy(model, memo)


def describe_error(exc: BaseException) -> str:
    """One line for an error that a load turns into ``AdapterLoadError`` (ours whole, others' first line)."""
    if isinstance(exc, PeftError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def check_adapter_fits(
    model: nn.Module,
    config: PeftConfig,
    tensors: Mapping[str, Tensor],
    adapter_name: str,
    strict: bool,
    source: str | os.PathLike[str],
    autocast_adapter_dtype: bool = True,
) -> LoadReport | None:
    """Raise ``AdapterLoadError`` if adding this adapter to ``model`` (the base model of a
    PeftModel) and loading ``tensors`` into it would fail; ``model`` is not touched.
    Returns the check's report (the load need not check again), or None if skipped.

    The adapter is injected into a meta-device skeleton of the model, so a config that
    matches nothing or asks for huge ranks fails here without allocating anything. Models
    that cannot be copied this way (or layers that do not run on meta) skip this check; the
    load itself then checks again and rolls back.
    """
    try:
        skeleton = TunedModel(meta_skeleton(model))
    except Exception:  # an exotic module that cannot be deep-copied
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the real injection warns
            skeleton.inject_adapter(config, adapter_name, autocast_adapter_dtype, loading=True)
    except PeftError as exc:
        raise AdapterLoadError(f"adapter in {source} does not fit this model: {exc}") from exc
    except Exception:  # e.g. a third-party layer that does not support the meta device
        return None
    report = check_state_dict(skeleton, tensors, adapter_name)
    if not report.ok and (strict or report.mismatched):
        raise_or_warn(report, adapter_name, strict)
    return report
