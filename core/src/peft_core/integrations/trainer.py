"""``PeftTrainer``: transformers' ``Trainer`` that saves and resumes peft-core adapters.

transformers' ``Trainer`` recognises Hugging Face PEFT's ``PeftModel`` by its class, which
a peft-core ``PeftModel`` is not. With the plain ``Trainer``, training works only with
``remove_unused_columns=False`` (it reads the dataset columns off the wrapper's generic
``forward(*args, **kwargs)``) and checkpoints are a full ``model.safetensors`` (which
fails for tied weights, e.g. GPT-2). ``PeftTrainer`` is that ``Trainer`` with:

- columns, label names and loss arguments read off the wrapped model's ``forward``;
- checkpoints (``save_model()`` and every ``checkpoint-N``) that hold the adapters in the
  Hugging Face PEFT layout (``adapter_config.json`` + ``adapter_model.safetensors``,
  non-default adapters in subfolders), loadable by both libraries;
- ``resume_from_checkpoint`` and ``load_best_model_at_end`` copying the saved adapter
  tensors into the model's existing adapters in place (the optimizer keeps its parameters);
- ``model.update_and_allocate(step)`` (the tuner's ``on_step_end``: AdaLoRA's rank
  allocation) after each optimizer step, while the gradients are still there; ``step``
  is ``state.global_step`` before its increment (0 for the first step).

Other models pass through to ``Trainer`` unchanged. Use it as a base next to another
``Trainer`` subclass: ``class MyTrainer(PeftTrainer, SFTTrainer)``. Importing this
module imports transformers.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import can_return_loss, find_labels

from peft_core.api.peft_model import PeftModel
from peft_core.contract.config import CONFIG_NAME
from peft_core.errors import AdapterLoadError
from peft_core.io.checkpoint import adapter_subdir, read_tensors
from peft_core.io.loading import set_peft_model_state_dict

__all__ = ["PeftTrainer", "load_adapters_in_place"]

TRAINING_ARGS_NAME = "training_args.bin"  # as transformers' Trainer names it


def load_adapters_in_place(model: PeftModel, directory: str | os.PathLike[str]) -> None:
    """Copy every adapter of ``model`` from a checkpoint directory into the live tensors.

    Strict: an adapter missing from the directory, or tensors that do not fit, raise
    ``AdapterLoadError`` before anything is copied into that adapter.
    """
    for name in model.peft_config:
        folder = adapter_subdir(directory, name)
        if not (folder / CONFIG_NAME).is_file():
            raise AdapterLoadError(f"checkpoint {directory} holds no adapter {name!r} (looked in {folder})")
        set_peft_model_state_dict(model, read_tensors(folder), name)


def _holds_adapters(directory: str | os.PathLike[str]) -> bool:
    root = Path(directory)
    return (root / CONFIG_NAME).is_file() or any((p / CONFIG_NAME).is_file() for p in root.iterdir() if p.is_dir())


class _StepEnd(TrainerCallback):  # type: ignore[misc]
    """Calls ``update_and_allocate`` after each optimizer step, before ``zero_grad`` (AdaLoRA
    scores ranks by their gradients, which ``on_step_end`` no longer sees)."""

    def __init__(self, trainer: PeftTrainer) -> None:
        self.trainer = trainer

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = self.trainer._peft_model()
        if model is not None and not self.trainer.accelerator.optimizer_step_was_skipped:
            model.update_and_allocate(state.global_step)


class PeftTrainer(transformers.Trainer):  # type: ignore[misc]
    """transformers' ``Trainer``, with adapter-only checkpoints for peft-core models."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base = self._peft_base()
        if base is None:
            return
        self.add_callback(_StepEnd(self))
        # What Trainer works out from a Hugging Face PeftModel's base model, from ours.
        if self.args.label_names is None:
            self.label_names = find_labels(type(base))
        self.can_return_loss = can_return_loss(type(base))
        if not hasattr(base, "accepts_loss_kwargs"):
            parameters = inspect.signature(base.forward).parameters.values()
            self.model_accepts_loss_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters)

    def _peft_model(self, model: nn.Module | None = None) -> PeftModel | None:
        unwrapped = self.accelerator.unwrap_model(model if model is not None else self.model)
        return unwrapped if isinstance(unwrapped, PeftModel) else None

    def _peft_base(self) -> nn.Module | None:
        model = self._peft_model()
        return None if model is None else model.get_base_model()

    def _set_signature_columns_if_needed(self) -> None:
        base = self._peft_base()
        if getattr(self, "_signature_columns", None) is None and base is not None:
            names = list(inspect.signature(base.forward).parameters)
            self._signature_columns = names + sorted({"label", "label_ids", *self.label_names})
        super()._set_signature_columns_if_needed()

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        model = self._peft_model()
        if model is None:
            super()._save(output_dir, state_dict)
            return
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        model.save_pretrained(output_dir, state_dict=state_dict)  # a state dict Trainer gathered, if any
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        peft_model = self._peft_model(model)
        if peft_model is None or not _holds_adapters(resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        load_adapters_in_place(peft_model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        peft_model = self._peft_model()
        best = self.state.best_model_checkpoint
        if peft_model is None or best is None or not _holds_adapters(best):
            super()._load_best_model()
            return
        load_adapters_in_place(peft_model, best)
