"""The base model's own state dict, with the keys it had before adapters were added.

Adapter layers put the wrapped module under ``.base_layer`` and add adapter tensors; this
reads (and loads) the base model's tensors under their original keys, found by walking the
module tree: ``q_proj.base_layer.weight`` is ``q_proj.weight``, adapter tensors and
modules_to_save copies are left out. Useful with FSDP and for comparing with a checkpoint
of the base model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from peft_core.contract.layer import AdapterLayer
from peft_core.engine import view_of
from peft_core.errors import AdapterLoadError


def _base_tensors(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    if isinstance(module, AdapterLayer):
        yield from _base_tensors(module.base_layer, prefix)
        return
    for name, param in module._parameters.items():
        if param is not None:
            yield prefix + name, param
    for name, buffer in module._buffers.items():
        if buffer is not None and name not in module._non_persistent_buffers_set:
            yield prefix + name, buffer
    for name, child in module._modules.items():
        if child is not None:
            yield from _base_tensors(child, f"{prefix}{name}.")


def get_base_model_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The base model's tensors (live, not copies) under the keys of the model without adapters."""
    return dict(_base_tensors(view_of(model).model))


def set_base_model_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True) -> None:
    """Copy base-model tensors keyed as the model without adapters into ``model``; adapters are untouched.

    With ``strict``, missing or unexpected keys raise ``AdapterLoadError`` before anything is copied.
    """
    live = get_base_model_state_dict(model)
    missing, unexpected = sorted(set(live) - set(state_dict)), sorted(set(state_dict) - set(live))
    wrong = sorted(k for k, v in state_dict.items() if k in live and v.shape != live[k].shape)
    if wrong or (strict and (missing or unexpected)):
        raise AdapterLoadError(
            f"state dict does not fit the base model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shapes differ {wrong[:5]}; nothing was loaded"
        )
    with torch.no_grad():
        for key, value in state_dict.items():
            if key in live:
                live[key].copy_(value)
