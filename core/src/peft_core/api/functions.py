"""Entry points: ``get_peft_model``, the in-place ``inject_adapter_in_model``, hotswapping from a folder."""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import Tensor, nn

from peft_core.api.peft_model import PeftModel
from peft_core.api.task_models import peft_model_class
from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import loading_every_tensor
from peft_core.engine import hotswap_adapter_from_state_dict, inject
from peft_core.engine.state import delete_adapter
from peft_core.errors import ConfigError
from peft_core.io.checkpoint import read_adapter
from peft_core.io.loading import DEFAULT_ADAPTER, set_peft_model_state_dict


def get_peft_model(
    model: nn.Module,
    peft_config: PeftConfig,
    adapter_name: str = DEFAULT_ADAPTER,
    mixed: bool = False,
    autocast_adapter_dtype: bool = True,
    revision: str | None = None,
    low_cpu_mem_usage: bool = False,
) -> PeftModel:
    """Wrap ``model`` with a new trainable adapter; the base parameters are frozen.

    The tuner is chosen by the config's type among installed plugins; ``peft_config``
    itself is not changed (the adapter keeps a prepared copy: ``model.peft_config``).
    ``model`` is changed in place: it is the model inside the returned PeftModel, which is
    of the task-type class of ``peft_config.task_type`` (``PeftModelForCausalLM``...), or a
    ``PeftModel`` without one, as in Hugging Face PEFT. ``revision`` is recorded in the
    config; ``low_cpu_mem_usage`` leaves the adapter uninitialised for a load to fill.
    ``mixed`` (adapters of several methods) is refused.
    """
    if mixed:
        raise ConfigError(
            "mixed=True (adapters of several methods in one model) is not supported: one model takes adapters of "
            "one method; use one PeftModel per method"
        )
    if revision is not None:
        peft_config = peft_config.model_copy(update={"revision": revision})
    model_class = peft_model_class(peft_config.task_type)
    return model_class(model, peft_config, adapter_name, autocast_adapter_dtype, low_cpu_mem_usage)


def inject_adapter_in_model(
    peft_config: PeftConfig,
    model: nn.Module,
    adapter_name: str = DEFAULT_ADAPTER,
    low_cpu_mem_usage: bool = False,
    state_dict: Mapping[str, Tensor] | None = None,
    autocast_adapter_dtype: bool = True,
) -> nn.Module:
    """Add an adapter to any ``nn.Module`` in place (no wrapper) and freeze the rest; returns it.

    The prepared config is stored as ``model.peft_config[adapter_name]``. With ``state_dict``
    (keys relative to ``model`` or as saved) the adapter's tensors are loaded from it,
    strictly: a state dict that does not fit leaves ``model`` as it was.
    """
    with loading_every_tensor(low_cpu_mem_usage or state_dict is not None):
        inject(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
    if state_dict is not None:
        try:
            set_peft_model_state_dict(model, state_dict, adapter_name)
        except BaseException:
            delete_adapter(model, adapter_name)
            raise
    return model


def hotswap_adapter(
    model: nn.Module,
    adapter_dir: str | os.PathLike[str],
    adapter_name: str = DEFAULT_ADAPTER,
    torch_device: str | None = None,
) -> None:
    """Replace adapter ``adapter_name``'s weights with those saved in ``adapter_dir``.

    ``model`` is a ``PeftModel`` or a module with injected adapters. Everything is checked
    before anything is copied: a checkpoint that does not fit raises ``AdapterLoadError``
    and leaves the model as it was. ``torch_device`` (Hugging Face PEFT's argument) is
    accepted: the new weights are copied into the adapter's tensors, on their device.
    """
    config, tensors = read_adapter(adapter_dir)
    hotswap_adapter_from_state_dict(model, tensors, config, adapter_name)
