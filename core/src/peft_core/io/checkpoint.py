"""Adapter directories in the Hugging Face PEFT layout, written atomically, read without pickle."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from peft_core.contract.config import CONFIG_NAME, PeftConfig
from peft_core.engine import validate_adapter_name
from peft_core.errors import AdapterLoadError, AdapterSaveError, ConfigError, PluginError
from peft_core.io.file_commit import commit_files, readable_path
from peft_core.registry import registry

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

# An adapter_config.json is a few KB; anything this large is not one (and is not read whole).
MAX_CONFIG_BYTES = 16 * 2**20
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"
DEFAULT_ADAPTER = "default"


def is_sharded(tensor: Tensor) -> TypeGuard[DTensor]:
    """Whether ``tensor`` is a ``DTensor`` (an FSDP2/tensor-parallel shard, not the full value)."""
    module = sys.modules.get("torch.distributed.tensor")  # no DTensor exists unless this was imported
    return module is not None and isinstance(tensor, module.DTensor)


def adapter_subdir(root: str | os.PathLike[str], adapter_name: str) -> Path:
    """Where an adapter lives: ``root`` for "default", ``root/<name>`` for any other."""
    validate_adapter_name(adapter_name)
    if adapter_name == DEFAULT_ADAPTER:
        return Path(root)
    path = Path(root) / adapter_name
    if path.is_symlink() or (path.exists() and not path.resolve().is_relative_to(Path(root).resolve())):
        raise AdapterSaveError(f"{path} points outside {root}; refusing to read or write an adapter through it")
    return path


def _write_text(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def write_adapter(directory: str | os.PathLike[str], config: PeftConfig, tensors: Mapping[str, Tensor]) -> None:
    """Save one adapter: config and weights replace the old pair together (see file_commit).

    Refused, with nothing written: sharded DTensors and 0-element placeholders of shape (0,)
    (ungathered sharded weights) and non-finite values, which the loader would refuse too.
    An empty tensor of a real shape (an AdaLoRA module pruned to rank 0: (0, in)) is saved.
    """
    sharded = sorted(key for key, tensor in tensors.items() if is_sharded(tensor))
    if sharded:
        raise AdapterSaveError(
            f"refusing to save sharded DTensors {sharded[:5]} (FSDP2): call "
            "peft_core.integrations.distributed.save_pretrained(model, directory) on every rank instead"
        )
    # ZeRO-3 and FSDP leave 1-D (0,) placeholders where a rank holds no shard.
    empty = sorted(key for key, tensor in tensors.items() if tensor.numel() == 0 and tensor.dim() <= 1)
    if empty:
        raise AdapterSaveError(
            f"refusing to save 0-element tensors {empty[:5]}: the weights are probably partitioned (DeepSpeed "
            "ZeRO-3, FSDP) and were not gathered. Call peft_core.integrations.distributed.save_pretrained(model, "
            "directory) on every rank instead (it gathers the adapter; rank 0 writes)"
        )
    broken = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if broken:
        raise AdapterSaveError(f"refusing to save tensors with NaN/inf values {broken[:5]}: the training diverged?")
    path = Path(directory)
    config_json = config.to_json_dict()
    config_json["inference_mode"] = True
    contiguous = _unaliased({key: tensor.detach().contiguous() for key, tensor in tensors.items()})
    text = json.dumps(config_json, indent=2, sort_keys=True) + "\n"
    try:
        path.mkdir(parents=True, exist_ok=True)
        commit_files(
            path,
            {
                WEIGHTS_NAME: lambda tmp: save_file(contiguous, tmp, metadata={"format": "pt"}),
                CONFIG_NAME: lambda tmp: _write_text(tmp, text),
            },
        )
    except OSError as exc:
        raise AdapterSaveError(f"could not save the adapter to {path}: {exc}; the previous files are intact") from exc


def _unaliased(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Copies for tensors that share storage with an earlier one (tied weights): safetensors
    refuses aliases, and each key must load on its own."""
    seen: set[tuple[int, object]] = set()
    result = {}
    for key, tensor in tensors.items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else (0, id(tensor))
        result[key] = tensor.clone() if where in seen else tensor
        seen.add(where)
    return result


def read_config_dict(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw adapter_config.json of an adapter directory."""
    try:
        found = readable_path(directory, CONFIG_NAME)
    except OSError as exc:
        raise AdapterLoadError(str(exc)) from exc
    if found is None:
        raise AdapterLoadError(f"no {CONFIG_NAME} in {Path(directory)}: is this an adapter directory?")
    path = Path(directory) / CONFIG_NAME
    try:
        if found.stat().st_size > MAX_CONFIG_BYTES:
            raise AdapterLoadError(f"{path} is over {MAX_CONFIG_BYTES} bytes: not an adapter config")
        data = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON, huge ints
        raise AdapterLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AdapterLoadError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def config_from_dict(data: Mapping[str, Any]) -> PeftConfig:
    """Build the right config class (chosen by ``peft_type`` through the registry)."""
    peft_type = data.get("peft_type")
    if not isinstance(peft_type, str):
        raise AdapterLoadError(f"adapter config has no valid peft_type (got {peft_type!r})")
    try:
        config = registry.tuner_for_peft_type(peft_type).config_class.from_json_dict(data)
        registry.new_tuner(config).check_config(config)
        return config
    except (ConfigError, PluginError) as exc:
        raise AdapterLoadError(f"cannot use this adapter config: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise AdapterLoadError(f"invalid adapter config: {exc}") from exc


def read_tensors(directory: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The adapter tensors of a directory (safetensors; a legacy .bin only with weights_only)."""
    path = Path(directory)
    try:
        weights = readable_path(path, WEIGHTS_NAME)
        if weights is not None:
            return load_file(weights)
        if (path / LEGACY_WEIGHTS_NAME).is_file():
            loaded = torch.load(path / LEGACY_WEIGHTS_NAME, map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
                raise AdapterLoadError(f"{path / LEGACY_WEIGHTS_NAME} is not a dict of tensors")
            return loaded
    except AdapterLoadError:
        raise
    except Exception as exc:  # safetensors and torch raise several types for corrupt files
        raise AdapterLoadError(f"cannot read adapter weights in {path}: {exc}") from exc
    raise AdapterLoadError(f"no {WEIGHTS_NAME} in {path}")


def read_adapter(directory: str | os.PathLike[str]) -> tuple[PeftConfig, dict[str, Tensor]]:
    """Config and tensors of the adapter stored in ``directory``."""
    config = config_from_dict(read_config_dict(directory))
    return config, read_tensors(directory)
