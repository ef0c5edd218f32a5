"""Shapes of Hugging Face PEFT checkpoints that we read but never write.

- With ``bias="all"`` and ``modules_to_save``, Hugging Face PEFT also saves the wrapper's
  inner names: ``<m>.modules_to_save.<p>`` (the trained copy again, same values as
  ``<m>.<p>``) and ``<m>.original_module.<p>`` (the original module's parameter, which it
  made trainable). We read the first as the copy and load the second into the original
  module, as Hugging Face PEFT does (it is used only while adapters are disabled).
- For ``task_type`` SEQ_CLS/TOKEN_CLS it trains and saves the head (``modules_to_save``
  gets ``["classifier", "score"]``, whatever the head is called); QUESTION_ANS likewise
  with ``qa_outputs``. We add the heads the model has (``task_heads``) and drop, on load,
  entries that match no module.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from peft_core.contract.config import PeftConfig
from peft_core.contract.matching import unmatched_entries
from peft_core.contract.tuner import MODEL_PREFIX
from peft_core.engine import ModulesToSaveWrapper
from peft_core.engine.targeting import TASK_HEADS
from peft_core.errors import AdapterLoadError

_MODEL = MODEL_PREFIX.rstrip(".")


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def checkpoint_key_aliases(model: nn.Module) -> dict[str, str]:
    """Hugging Face-only checkpoint key -> our key, from the ``modules_to_save`` wrappers of ``model``
    (the adapted user model: keys get ``base_model.model.``)."""
    aliases: dict[str, str] = {}
    for path, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            for name in module.base_layer.state_dict():
                aliases[_join(_MODEL, path, "modules_to_save", name)] = _join(_MODEL, path, name)
                aliases[_join(_MODEL, path, "original_module", name)] = _join(_MODEL, path, "base_layer", name)
    return aliases


def normalize_checkpoint_keys(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` with Hugging Face-only keys renamed to ours (a duplicate must agree)."""
    result = dict(state_dict)
    for alias, key in checkpoint_key_aliases(model).items():
        if alias not in result:
            continue
        value = result.pop(alias)
        if key in result and not (
            isinstance(value, Tensor) and value.shape == result[key].shape and torch.equal(value, result[key])
        ):
            raise AdapterLoadError(f"checkpoint keys {alias!r} and {key!r} hold the same tensor but differ")
        result.setdefault(key, value)
    return result


def fit_loaded_config(config: PeftConfig, model: nn.Module) -> PeftConfig:
    """Drop ``modules_to_save`` entries of a saved config that match no module of ``model``.

    Entries Hugging Face PEFT adds by task type go quietly; any other gets a warning. A
    checkpoint that has tensors for a dropped entry still fails to load (unexpected keys).
    """
    entries = getattr(config, "modules_to_save", None) or []
    paths = [path for path, _ in model.named_modules() if path]
    absent = unmatched_entries(entries, paths) if entries else []
    if absent:
        quiet = set(absent) <= set(TASK_HEADS.get(str(config.task_type), ())) and len(absent) < len(entries)
        if not quiet:
            warnings.warn(
                f"the adapter's modules_to_save entries {absent} match no module of this model; ignored",
                UserWarning,
                stacklevel=3,
            )
        kept = [entry for entry in entries if entry not in absent]
        config = config.model_copy(update={"modules_to_save": kept or None})
    return config
