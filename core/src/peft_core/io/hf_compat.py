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

import re
import warnings
from collections.abc import Callable, Mapping

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


def _transformers_renamer(model: nn.Module) -> Callable[[str], str] | None:
    """transformers' own key renaming for this model's layout (its v5 conversion mapping), if any."""
    if not hasattr(getattr(model, "config", None), "model_type"):
        return None
    try:  # optional dependency: only transformers models have renamings
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, apply_renamings
    except ImportError:
        return None
    try:
        transforms = get_model_conversion_mapping(model)
    except Exception:  # a model transformers does not describe
        return None
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    return (lambda key: str(apply_renamings(key, renamings))) if renamings else None


def _regex_renamer(key_mapping: Mapping[str, str]) -> Callable[[str], str]:
    def rename(key: str) -> str:
        for pattern, replacement in key_mapping.items():
            key = re.sub(pattern, replacement, key)
        return key

    return rename


def map_checkpoint_keys(
    model: nn.Module, state_dict: Mapping[str, Tensor], key_mapping: Mapping[str, str] | None = None
) -> dict[str, Tensor]:
    """Checkpoint keys of module adapters renamed for ``model``'s current layout.

    An adapter saved for an older layout of a transformers model (``language_model.model.``
    before transformers 5 moved it to ``model.language_model.``) loads as transformers loads
    the model's own weights: with its renamings, or with ``key_mapping`` (regex ->
    replacement, applied in order) when given. Keys of model-level adapters are kept.
    """
    rename = _regex_renamer(key_mapping) if key_mapping else _transformers_renamer(model)
    if rename is None:
        return dict(state_dict)
    return {
        MODEL_PREFIX + rename(key.removeprefix(MODEL_PREFIX)) if key.startswith(MODEL_PREFIX) else key: tensor
        for key, tensor in state_dict.items()
    }
