"""What a launched worker writes for the tests to read: tensors and facts per rank."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor


def record(folder: Path, rank: int, tensors: dict[str, Tensor], facts: dict[str, Any], name: str = "rank") -> None:
    """``folder/<name><r>.safetensors`` (the tensors, on CPU) and ``folder/<name><r>.json`` (the facts)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, folder / f"{name}{rank}.safetensors")
    (folder / f"{name}{rank}.json").write_text(json.dumps(facts, indent=1))


def read_facts(folder: Path, rank: int = 0, name: str = "rank") -> dict[str, Any]:
    found: dict[str, Any] = json.loads((folder / f"{name}{rank}.json").read_text())
    return found


def read_tensors(folder: Path, rank: int = 0, name: str = "rank") -> dict[str, Tensor]:
    return load_file(folder / f"{name}{rank}.safetensors")
