"""The ``README.md`` model card written beside a saved adapter, as Hugging Face PEFT writes one.

The Hub and tools read its front matter (``base_model``, ``library_name: peft``, ``tags``);
the adapter format is Hugging Face PEFT's, so ``library_name`` says ``peft``. Written
offline, and only when the folder has no README.md: a user's own card is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from peft_core.contract.config import PeftConfig

CARD_NAME = "README.md"


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def model_card(configs: Mapping[str, PeftConfig], pipeline_tag: str | None = None) -> str:
    """The card's text for the adapters ``configs`` (by name) saved in one folder."""
    first = next(iter(configs.values()))
    base = first.base_model_name_or_path
    methods = sorted({config.peft_type.lower() for config in configs.values()})
    tags = sorted({*methods, "peft-core", *([f"base_model:adapter:{base}"] if base else [])})
    front = ["---", "library_name: peft"]
    if base:
        front.append(f"base_model: {base}")
    if pipeline_tag:
        front.append(f"pipeline_tag: {pipeline_tag}")
    front += ["tags:", *(f"- {tag}" for tag in tags), "---", ""]
    body = [
        f"# {', '.join(m.upper() for m in methods)} adapter" + (f" for {base}" if base else ""),
        "",
        "Saved with peft-core in the Hugging Face PEFT format: load it with either library,",
        "`PeftModel.from_pretrained(base_model, path)`.",
        "",
        "| adapter | method | task |",
        "|---|---|---|",
        *(f"| {name} | {config.peft_type} | {config.task_type or ''} |" for name, config in configs.items()),
        "",
        "### Framework versions",
        "",
    ]
    versions = [(d, _version(d)) for d in ("peft-core", "torch", "transformers")]
    body += [f"- {name} {number}" for name, number in versions if number]
    return "\n".join(front + body) + "\n"


def write_model_card(
    directory: str | os.PathLike[str], configs: Mapping[str, PeftConfig], pipeline_tag: str | None
) -> None:
    """Write the card into ``directory`` unless it already has a README.md."""
    path = Path(directory) / CARD_NAME
    if path.exists() or not configs:
        return
    path.write_text(model_card(configs, pipeline_tag), encoding="utf-8")
