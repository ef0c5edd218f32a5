"""Default ``target_modules`` by transformers ``model_type``: the same table as Hugging Face PEFT's."""

from __future__ import annotations

import json
from importlib.resources import files

DEFAULT_TARGET_MODULES: dict[str, list[str]] = json.loads(
    files("peft_lora").joinpath("default_targets.json").read_text(encoding="utf-8")
)
