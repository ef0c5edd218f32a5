"""``AutoPeftModel*``: load the base model an adapter names, then the adapter, in one call.

As in Hugging Face PEFT: the adapter folder's ``adapter_config.json`` gives
``base_model_name_or_path`` (and ``revision``); the class's transformers auto class loads
that model (a local folder, or whatever transformers can resolve), its token embeddings
grow to a tokenizer saved beside the adapter if that tokenizer is larger, and the
task-type class loads the adapter. ``AutoPeftModel`` is for adapters without a task type:
it reads the base model's class from the config's ``auto_mapping``, importing only from
an allow-list of libraries. transformers is needed here (and only here).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from peft_core.api.peft_model import PeftModel
from peft_core.api.task_models import (
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
    peft_model_class,
)
from peft_core.errors import AdapterLoadError, PeftError
from peft_core.io.checkpoint import DEFAULT_ADAPTER, config_from_dict, read_config_dict

#: Libraries whose classes ``AutoPeftModel`` may import for ``auto_mapping`` (Hugging Face PEFT's list).
DEFAULT_IMPORT_ALLOWLIST = ("diffusers", "lerobot", "megatron-core", "transformers")
TOKENIZER_CONFIG = "tokenizer_config.json"


def _allowed(library: str, allowlist: Sequence[str]) -> bool:
    return any(library == allowed or library.startswith(allowed + ".") for allowed in allowlist)


def _transformers() -> Any:
    try:
        import transformers  # an optional dependency of the core: only the auto classes need it
    except ImportError as exc:
        raise PeftError("the AutoPeftModel classes load models with transformers: pip install transformers") from exc
    return transformers


class _AutoPeftModel:
    """Base of the auto classes; use ``from_pretrained``."""

    #: The transformers auto class that loads the base model (None: read it from ``auto_mapping``).
    auto_class: ClassVar[str | None] = None
    peft_class: ClassVar[type[PeftModel]] = PeftModel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise PeftError(f"{type(self).__name__} is not instantiated: call {type(self).__name__}.from_pretrained(path)")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        adapter_name: str = DEFAULT_ADAPTER,
        is_trainable: bool = False,
        revision: str | None = None,
        import_allowlist: Sequence[str] | None = None,
        **model_kwargs: Any,
    ) -> PeftModel:
        """The base model of the adapter in folder ``pretrained_model_name_or_path``, with the adapter loaded.

        ``model_kwargs`` go to the base model's ``from_pretrained`` (``torch_dtype=``...);
        ``revision`` overrides the config's base model revision.
        """
        folder = Path(pretrained_model_name_or_path)
        raw = read_config_dict(folder)
        config = config_from_dict(raw)
        if not config.base_model_name_or_path:
            raise AdapterLoadError(
                f"the adapter in {folder} names no base_model_name_or_path; load the base model yourself and call "
                f"{cls.peft_class.__name__}.from_pretrained(model, {str(folder)!r})"
            )
        model_class = cls._base_model_class(config.task_type, raw, import_allowlist or DEFAULT_IMPORT_ALLOWLIST)
        base: nn.Module = model_class.from_pretrained(
            config.base_model_name_or_path, revision=revision or config.revision, **model_kwargs
        )
        _fit_embeddings_to_tokenizer(base, folder)
        return cls.peft_class.from_pretrained(base, folder, adapter_name=adapter_name, is_trainable=is_trainable)

    @classmethod
    def _base_model_class(cls, task_type: str | None, raw: dict[str, Any], allowlist: Sequence[str]) -> Any:
        if cls.auto_class is not None:
            expected = peft_model_class(task_type)
            if task_type is not None and expected is not cls.peft_class:
                raise PeftError(
                    f"the adapter's task_type is {task_type!r}, which {expected.__name__} runs, not "
                    f"{cls.peft_class.__name__}; use the auto class for that task"
                )
            return getattr(_transformers(), cls.auto_class)
        if task_type is not None:
            raise PeftError(
                f"the adapter has task_type {task_type!r}: use the auto class of that task "
                "(e.g. AutoPeftModelForCausalLM for 'CAUSAL_LM'), not AutoPeftModel"
            )
        mapping = raw.get("auto_mapping")
        if not isinstance(mapping, dict) or not {"base_model_class", "parent_library"} <= set(mapping):
            raise PeftError(
                "the adapter has no task_type and no auto_mapping, so the base model's class is unknown; "
                "load the base model yourself and use PeftModel.from_pretrained"
            )
        library = str(mapping["parent_library"])
        if not _allowed(library, allowlist):
            raise PeftError(
                f"auto_mapping asks to import {library!r}, which is not in the import allow-list {list(allowlist)}; "
                f"if that library is safe, pass import_allowlist=[..., {library!r}]"
            )
        return getattr(importlib.import_module(library), str(mapping["base_model_class"]))


def _fit_embeddings_to_tokenizer(model: nn.Module, folder: Path) -> None:
    """Grow ``model``'s token embeddings to a tokenizer saved with the adapter, if that one is larger."""
    get_embeddings: Any = getattr(model, "get_input_embeddings", None)
    if not (folder / TOKENIZER_CONFIG).is_file() or get_embeddings is None:
        return
    tokenizer = _transformers().AutoTokenizer.from_pretrained(folder)
    if len(tokenizer) > get_embeddings().weight.shape[0]:
        resize: Any = getattr(model, "resize_token_embeddings")  # noqa: B009 (nn.Module's __getattr__ is untyped)
        resize(len(tokenizer))


class AutoPeftModel(_AutoPeftModel):
    """For an adapter without a task type; the base model's class comes from ``auto_mapping``."""


class AutoPeftModelForCausalLM(_AutoPeftModel):
    auto_class = "AutoModelForCausalLM"
    peft_class = PeftModelForCausalLM


class AutoPeftModelForSeq2SeqLM(_AutoPeftModel):
    auto_class = "AutoModelForSeq2SeqLM"
    peft_class = PeftModelForSeq2SeqLM


class AutoPeftModelForSequenceClassification(_AutoPeftModel):
    auto_class = "AutoModelForSequenceClassification"
    peft_class = PeftModelForSequenceClassification


class AutoPeftModelForTokenClassification(_AutoPeftModel):
    auto_class = "AutoModelForTokenClassification"
    peft_class = PeftModelForTokenClassification


class AutoPeftModelForQuestionAnswering(_AutoPeftModel):
    auto_class = "AutoModelForQuestionAnswering"
    peft_class = PeftModelForQuestionAnswering


class AutoPeftModelForFeatureExtraction(_AutoPeftModel):
    auto_class = "AutoModel"
    peft_class = PeftModelForFeatureExtraction
