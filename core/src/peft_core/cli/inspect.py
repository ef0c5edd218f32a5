"""``peft-core inspect ADAPTER_DIR``: what an adapter directory holds, ours or Hugging Face PEFT's."""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peft_core.contract.config import CONFIG_NAME
from peft_core.errors import PeftError
from peft_core.io.checkpoint import (
    LEGACY_WEIGHTS_NAME,
    WEIGHTS_NAME,
    config_from_dict,
    read_config_dict,
    read_tensors,
)
from peft_core.registry import registry


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    dtype: str
    parameters: int


@dataclass
class AdapterInfo:
    """One adapter of a directory: the root ("default") or a subfolder (its name)."""

    name: str
    path: str
    peft_type: str | None
    config: dict[str, Any]
    tuner: str | None  # "lora (peft-lora 0.1.0)"; None when it cannot be loaded here
    problem: str | None  # why it cannot be loaded here
    notes: list[str] = field(default_factory=list)  # warnings from reading the config
    tensors: list[TensorInfo] = field(default_factory=list)
    parameters: int = 0
    size_bytes: int = 0  # of the tensors in memory
    file_bytes: int = 0  # of the weights file on disk


def adapter_folders(directory: Path) -> list[tuple[str, Path]]:
    """(name, folder) of every adapter in ``directory``: the root first, then subfolders."""
    found = [("default", directory)] if (directory / CONFIG_NAME).is_file() else []
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        if (sub / CONFIG_NAME).is_file():
            found.append((sub.name, sub))
    return found


def _tuner_label(peft_type: str) -> str:
    tuner = registry.tuner_for_peft_type(peft_type)
    info = next((p for p in registry.plugins() if tuner.name in p.tuners), None)
    if info is None:
        return tuner.name
    return f"{tuner.name} ({' '.join(filter(None, [info.distribution, info.version]))})"


def describe_adapter(name: str, folder: Path) -> AdapterInfo:
    """Read one adapter folder; a config this installation cannot use is reported, not raised."""
    raw = read_config_dict(folder)
    peft_type = raw.get("peft_type") if isinstance(raw.get("peft_type"), str) else None
    info = AdapterInfo(name, str(folder), peft_type, raw, None, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = config_from_dict(raw)
            info.config = config.model_dump(mode="json")
            info.tuner = _tuner_label(config.peft_type)
        except PeftError as exc:
            info.problem = str(exc)
    info.notes = [str(w.message) for w in caught]
    tensors = read_tensors(folder)
    for key in sorted(tensors):
        tensor = tensors[key]
        info.tensors.append(
            TensorInfo(key, list(tensor.shape), str(tensor.dtype).removeprefix("torch."), tensor.numel())
        )
        info.parameters += tensor.numel()
        info.size_bytes += tensor.numel() * tensor.element_size()
    weights = folder / WEIGHTS_NAME if (folder / WEIGHTS_NAME).is_file() else folder / LEGACY_WEIGHTS_NAME
    info.file_bytes = weights.stat().st_size
    return info


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _print(info: AdapterInfo) -> None:
    print(f"adapter {info.name!r}: {info.path}")
    print(f"  peft_type: {info.peft_type}")
    print(f"  tuner: {info.tuner}" if info.tuner else f"  cannot be loaded here: {info.problem}")
    for note in info.notes:
        print(f"  note: {note}")
    print("  config:")
    for key in sorted(info.config):
        print(f"    {key}: {json.dumps(info.config[key])}")
    print(
        f"  tensors: {len(info.tensors)}, parameters: {info.parameters:,d}, "
        f"size: {_human(info.size_bytes)} (file {_human(info.file_bytes)})"
    )
    width = max((len(t.name) for t in info.tensors), default=0)
    for tensor in info.tensors:
        shape = "(" + ", ".join(map(str, tensor.shape)) + ")"
        print(f"    {tensor.name:<{width}}  {shape:<14} {tensor.dtype}")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.adapter_dir)
    if not directory.is_dir():
        raise PeftError(f"{directory} is not a directory")
    folders = adapter_folders(directory)
    if not folders:
        raise PeftError(f"no adapter in {directory}: neither it nor a subfolder has an {CONFIG_NAME}")
    infos = [describe_adapter(name, folder) for name, folder in folders]
    if args.json:
        print(json.dumps([asdict(info) for info in infos], indent=2))
    else:
        for info in infos:
            _print(info)
    return 1 if any(info.problem for info in infos) else 0


def add_parser(commands: Any) -> None:
    """Register ``inspect`` on the subcommand parsers of ``peft-core``."""
    parser = commands.add_parser(
        "inspect", help="show an adapter directory: config, tuner, tensors, parameter count and size"
    )
    parser.add_argument("adapter_dir", help="adapter directory (ours or Hugging Face PEFT's); subfolders too")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run)
