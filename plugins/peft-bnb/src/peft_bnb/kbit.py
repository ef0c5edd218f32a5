"""``prepare_model_for_kbit_training``: Hugging Face PEFT's preparation of a quantized model for training."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import nn

_HALF = (torch.float16, torch.bfloat16)


def is_quantized(model: nn.Module) -> bool:
    """Whether transformers loaded ``model`` in 4 or 8 bits, or it holds bitsandbytes layers."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return True
    return any(type(m).__module__.split(".")[0] == "bitsandbytes" for m in model.modules())


def prepare_model_for_kbit_training(
    model: nn.Module,
    use_gradient_checkpointing: bool = True,
    gradient_checkpointing_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Get a (quantized) transformers model ready for adapter training, in place; returns it.

    As Hugging Face PEFT's function of this name: every parameter is frozen; half-precision
    parameters that are not 4-bit packed (layer norms, embeddings, the output head) are
    cast to fp32, for stable training; and, for a quantized model with
    ``use_gradient_checkpointing``, gradient checkpointing is switched on
    (``gradient_checkpointing_kwargs`` go to ``torch.utils.checkpoint``) with the input
    embeddings' output requiring grad, which reentrant checkpointing needs to reach the
    adapters. Call it before ``get_peft_model``. Beyond Hugging Face PEFT: each bitsandbytes
    4-bit layer gets a hook that undoes bitsandbytes' CPU inference layout before a training
    forward (``peft_bnb.quantized.unpack_for_autograd``: without it, training after an
    evaluation on such a CPU silently loses most gradients).
    """
    kwargs = dict(gradient_checkpointing_kwargs or {})
    for param in model.parameters():
        param.requires_grad_(False)
    for param in model.parameters():
        if param.dtype in _HALF and type(param).__name__ != "Params4bit":
            param.data = param.data.to(torch.float32)
    _keep_trainable_layout(model)
    if not (use_gradient_checkpointing and is_quantized(model)):
        return model
    if kwargs.get("use_reentrant", True):
        enable = getattr(model, "enable_input_require_grads", None)
        if callable(enable):
            enable()
        else:
            model.get_input_embeddings().register_forward_hook(_output_requires_grad)  # type: ignore[operator]
    _enable_checkpointing(model, kwargs)
    return model


def _keep_trainable_layout(model: nn.Module) -> None:
    """Every 4-bit layer gets its trainable layout back before a training forward (``unpack_hook``).

    Layers no adapter wraps need it too: a gradient that stops at any of them never reaches
    the adapters below.
    """
    layers = [m for m in model.modules() if type(m).__module__.split(".")[0] == "bitsandbytes"]
    if not layers:
        return
    # Imported here: bitsandbytes is slow to import, and a model with its layers has imported it.
    from peft_bnb.quantized import unpack_hook

    for layer in layers:
        if not any(hook is unpack_hook for hook in layer._forward_pre_hooks.values()):
            layer.register_forward_pre_hook(unpack_hook)


def _enable_checkpointing(model: nn.Module, kwargs: dict[str, Any]) -> None:
    """transformers' checkpointing switch: ``activation_checkpointing_enable`` (transformers >= 5),
    else ``gradient_checkpointing_enable``."""
    newer = getattr(model, "activation_checkpointing_enable", None)
    if callable(newer):
        newer(activation_checkpointing_kwargs=kwargs)
        return
    older = getattr(model, "gradient_checkpointing_enable", None)
    if not callable(older):
        warnings.warn(
            f"{type(model).__name__} has no gradient checkpointing switch (transformers models have one); "
            "gradient checkpointing was not switched on",
            UserWarning,
            stacklevel=3,
        )
    elif "gradient_checkpointing_kwargs" in inspect.signature(older).parameters:
        older(gradient_checkpointing_kwargs=kwargs)
    else:
        older()


def _output_requires_grad(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
    output.requires_grad_(True)
