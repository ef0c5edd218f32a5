"""Entry points: ``get_peft_model``, the in-place ``inject_adapter_in_model``, hotswapping from a folder."""

from __future__ import annotations

import os

from torch import nn

from peft_core.api.peft_model import PeftModel
from peft_core.api.task_models import peft_model_class
from peft_core.contract.config import PeftConfig
from peft_core.engine import hotswap_adapter_from_state_dict, inject
from peft_core.io.checkpoint import read_adapter
from peft_core.io.loading import DEFAULT_ADAPTER


def get_peft_model(
    model: nn.Module,
    peft_config: PeftConfig,
    adapter_name: str = DEFAULT_ADAPTER,
    autocast_adapter_dtype: bool = True,
) -> PeftModel:
    """Wrap ``model`` with a new trainable adapter; the base parameters are frozen.

    The tuner is chosen by the config's type among installed plugins; ``peft_config``
    itself is not changed (the adapter keeps a prepared copy: ``model.peft_config``). The
    result is the task-type class of ``peft_config.task_type`` (``PeftModelForCausalLM``...),
    or ``PeftModel`` without one, as in Hugging Face PEFT.
    """
    model_class = peft_model_class(peft_config.task_type)
    return model_class(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)


def inject_adapter_in_model(
    peft_config: PeftConfig,
    model: nn.Module,
    adapter_name: str = DEFAULT_ADAPTER,
    autocast_adapter_dtype: bool = True,
) -> nn.Module:
    """Add an adapter to any ``nn.Module`` in place (no wrapper) and freeze the rest; returns it.

    The prepared config is stored as ``model.peft_config[adapter_name]``.
    """
    inject(model, peft_config, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
    return model


def hotswap_adapter(model: nn.Module, adapter_dir: str | os.PathLike[str], adapter_name: str = DEFAULT_ADAPTER) -> None:
    """Replace adapter ``adapter_name``'s weights with those saved in ``adapter_dir``.

    ``model`` is a ``PeftModel`` or a module with injected adapters. Everything is checked
    before anything is copied: a checkpoint that does not fit raises ``AdapterLoadError``
    and leaves the model as it was.
    """
    config, tensors = read_adapter(adapter_dir)
    hotswap_adapter_from_state_dict(model, tensors, config, adapter_name)
