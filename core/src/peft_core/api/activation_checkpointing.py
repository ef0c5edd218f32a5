"""Activation (gradient) checkpointing of a wrapped transformers model, made to work with adapters.

With the base model frozen, the embeddings' output does not require grad; reentrant
checkpointing then cuts the graph at every checkpointed layer and the backward pass
fails ("element 0 of tensors does not require grad") or skips the adapters. The fix,
as in Hugging Face PEFT, is the model's ``enable_input_require_grads()`` hook; recent
transformers versions register it only for text models, older ones only for their
own PEFT integration. Our wrapper registers it whenever checkpointing is on.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from peft_core.errors import PeftError


def require_input_grads(model: nn.Module) -> None:
    """Make the input embeddings' output require grad (once; no-op for models without the hook)."""
    enable = getattr(model, "enable_input_require_grads", None)
    if callable(enable) and not getattr(model, "_require_grads_hooks", None):
        enable()


def is_checkpointing(model: nn.Module) -> bool:
    """Whether any module of ``model`` has transformers' checkpointing switched on."""
    return any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules())


class ActivationCheckpointing:
    """``PeftModel`` methods of the transformers checkpointing API (both of its names).

    They act on the wrapped model; transformers' ``Trainer`` calls them when
    ``TrainingArguments(gradient_checkpointing=True)``.
    """

    def get_base_model(self) -> nn.Module:
        raise NotImplementedError

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: Any = None, **kwargs: Any) -> None:
        """Checkpoint the wrapped model's layers; inputs require grad so adapters train.

        ``activation_checkpointing_kwargs`` go to ``torch.utils.checkpoint.checkpoint``
        (e.g. ``{"use_reentrant": True}``); other keyword arguments to transformers.
        """
        model = self.get_base_model()
        enable = getattr(model, "activation_checkpointing_enable", None)
        if callable(enable):
            enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs, **kwargs)
        else:  # transformers < 5 has only the older name
            older = getattr(model, "gradient_checkpointing_enable", None)
            if not callable(older):
                raise PeftError(
                    f"{type(model).__name__} has no activation checkpointing (transformers models have it); "
                    "wrap its layers in torch.utils.checkpoint yourself"
                )
            older(gradient_checkpointing_kwargs=activation_checkpointing_kwargs, **kwargs)
        require_input_grads(model)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Any = None, **kwargs: Any) -> None:
        """The older name of ``activation_checkpointing_enable`` (as Hugging Face PEFT users call it)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        """Switch checkpointing off and remove the input-grad hook."""
        model = self.get_base_model()
        disable = getattr(model, "activation_checkpointing_disable", None)
        if not callable(disable):
            disable = getattr(model, "gradient_checkpointing_disable", None)
        if callable(disable):
            disable()
        remove = getattr(model, "disable_input_require_grads", None)
        if callable(remove):
            remove()

    def gradient_checkpointing_disable(self) -> None:
        """The older name of ``activation_checkpointing_disable``."""
        self.activation_checkpointing_disable()
