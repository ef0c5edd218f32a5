"""Adapter directories in the Hugging Face PEFT layout, written atomically, read without pickle."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from peft_core.config import PeftConfig
from peft_core.errors import AdapterLoadError, AdapterSaveError, ConfigError, PluginError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"
DEFAULT_ADAPTER = "default"


def adapter_subdir(root: str | os.PathLike[str], adapter_name: str) -> Path:
    """Where an adapter lives: ``root`` for "default", ``root/<name>`` for any other."""
    from peft_core.tuner import validate_adapter_name

    validate_adapter_name(adapter_name)
    return Path(root) if adapter_name == DEFAULT_ADAPTER else Path(root) / adapter_name


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temp file in the same folder and rename: readers see the old or new file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def write_adapter(directory: str | os.PathLike[str], config: PeftConfig, tensors: Mapping[str, Tensor]) -> None:
    """Save one adapter: weights first, then config, each atomically."""
    empty = sorted(key for key, tensor in tensors.items() if tensor.numel() == 0)
    if empty:
        raise AdapterSaveError(
            f"refusing to save 0-element tensors {empty[:5]}: the weights are probably sharded "
            "(FSDP/ZeRO-3); gather the full state dict before saving"
        )
    path = Path(directory)
    config_json = config.to_json_dict()
    config_json["inference_mode"] = True
    contiguous = {key: tensor.detach().contiguous() for key, tensor in tensors.items()}
    try:
        path.mkdir(parents=True, exist_ok=True)
        _atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(contiguous, tmp, metadata={"format": "pt"}))
        text = json.dumps(config_json, indent=2, sort_keys=True) + "\n"
        _atomic_write(path / CONFIG_NAME, lambda tmp: _write_text(tmp, text))
    except OSError as exc:
        raise AdapterSaveError(f"could not save the adapter to {path}: {exc}") from exc


def read_config_dict(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw adapter_config.json of an adapter directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise AdapterLoadError(f"no {CONFIG_NAME} in {Path(directory)}: is this an adapter directory?")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AdapterLoadError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def config_from_dict(data: Mapping[str, Any]) -> PeftConfig:
    """Build the right config class (chosen by ``peft_type`` through the registry)."""
    from peft_core.plugins import registry

    peft_type = data.get("peft_type")
    if not isinstance(peft_type, str):
        raise AdapterLoadError(f"adapter config has no valid peft_type (got {peft_type!r})")
    try:
        return registry.tuner_for_peft_type(peft_type).config_class.from_json_dict(data)
    except (ConfigError, PluginError) as exc:
        raise AdapterLoadError(f"cannot use this adapter config: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise AdapterLoadError(f"invalid adapter config: {exc}") from exc


def read_tensors(directory: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The adapter tensors of a directory (safetensors; a legacy .bin only with weights_only)."""
    path = Path(directory)
    try:
        if (path / WEIGHTS_NAME).is_file():
            return load_file(path / WEIGHTS_NAME)
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
