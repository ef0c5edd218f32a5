"""``save_embedding_layers``: saving the base model's embedding layers with an adapter.

As Hugging Face PEFT does: with ``"auto"`` they are saved (with a warning saying so) when a
target is named like a transformers embedding layer (``embed_tokens``, ``lm_head``: the
incumbent's rule), or when the vocabulary was resized since the base model was saved
(read offline from ``<base_model_name_or_path>/config.json``); ``True`` saves them,
``False`` never. Keys are the modules' own: ``<path>.base_layer.weight`` for a
wrapped embedding, ``<path>.weight`` otherwise; loading takes them back.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from peft_core.contract.config import PeftConfig
from peft_core.contract.layer import AdapterLayer
from peft_core.contract.tuner import MODEL_PREFIX
from peft_core.engine import ModulesToSaveWrapper
from peft_core.errors import AdapterSaveError

SaveEmbeddings = bool | Literal["auto"]
EMBEDDING_NAMES = ("embed_tokens", "lm_head")  # Hugging Face PEFT's names for "an embedding is a target"


def embedding_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The model's input and output embedding modules by path (adapter layers as they are)."""
    found: list[nn.Module] = []
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        get = getattr(model, getter, None)
        module = get() if callable(get) else None
        if isinstance(module, nn.Module):
            found.append(module)
    paths: dict[str, nn.Module] = {}
    for path, module in model.named_modules():
        unwrapped = module.base_layer if isinstance(module, AdapterLayer) else module
        if any(unwrapped is m or module is m for m in found) and path:
            paths[path] = module
    return paths


def _resized(model: nn.Module, config: PeftConfig) -> bool:
    """Whether the vocabulary differs from the base model's saved config (local folders only)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    source = config.base_model_name_or_path
    if vocab is None or not source or not (Path(source) / "config.json").is_file():
        return False
    try:
        saved = json.loads((Path(source) / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    except (OSError, ValueError):
        return False
    return saved is not None and saved != vocab


def embedding_tensors(model: nn.Module, config: PeftConfig, choice: SaveEmbeddings) -> dict[str, Tensor]:
    """The embedding weights to save beside the adapter, under their checkpoint keys."""
    if choice not in (True, False, "auto"):
        raise AdapterSaveError(f"save_embedding_layers={choice!r}: use True, False or 'auto'")
    modules = embedding_modules(model)
    # The incumbent's rule: with a target named like an embedding, only the wrapped embeddings.
    wrapped: dict[str, nn.Module] = {
        p: m for p, m in modules.items() if isinstance(m, AdapterLayer) and not isinstance(m, ModulesToSaveWrapper)
    }
    targeted = any(path.rsplit(".", 1)[-1] in EMBEDDING_NAMES for path in wrapped)
    if choice == "auto":
        if targeted:
            warnings.warn(
                "save_embedding_layers='auto': saving the embedding layers, as an embedding layer is a target",
                UserWarning,
                stacklevel=3,
            )
        elif _resized(model, config):
            warnings.warn(
                "save_embedding_layers='auto': saving the embedding layers, as the vocabulary was resized since "
                f"{config.base_model_name_or_path} was saved",
                UserWarning,
                stacklevel=3,
            )
        else:
            return {}
    elif not choice:
        return {}
    if not modules:
        raise AdapterSaveError(
            "save_embedding_layers=True, but the model has no get_input_embeddings()/get_output_embeddings() "
            "(not a transformers model); pass save_embedding_layers=False"
        )
    if targeted:
        modules = wrapped
    tensors: dict[str, Tensor] = {}
    for path, module in modules.items():
        owner, prefix = (
            (module.base_layer, f"{path}.base_layer") if isinstance(module, AdapterLayer) else (module, path)
        )
        for name, param in owner.named_parameters(recurse=False):
            tensors[f"{MODEL_PREFIX}{prefix}.{name}"] = param.detach()
    return tensors


def embeddings_from_state_dict(embeddings: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The values of ``embeddings`` (``embedding_tensors``) in a gathered full ``state_dict``.

    Named as ``PeftModel.state_dict()`` names them, which for base weights is the checkpoint
    key: what ``accelerator.get_state_dict`` and ``get_model_state_dict(full_state_dict=True)``
    return, where the live weights are shards.
    """
    missing = sorted(set(embeddings) - set(state_dict))
    if missing:
        raise AdapterSaveError(
            f"the given state_dict lacks the embedding weights {missing[:3]} that save_embedding_layers asks for: "
            "pass the model's full state dict, or save_embedding_layers=False"
        )
    return {key: state_dict[key] for key in embeddings}


def embedding_keys(model: nn.Module) -> set[str]:
    """Checkpoint keys of embedding weights that a load may copy into the base model."""
    keys: set[str] = set()
    for path, module in embedding_modules(model).items():
        owner, prefix = (
            (module.base_layer, f"{path}.base_layer") if isinstance(module, AdapterLayer) else (module, path)
        )
        keys.update(f"{MODEL_PREFIX}{prefix}.{name}" for name, _ in owner.named_parameters(recurse=False))
    return keys
