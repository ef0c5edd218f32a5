"""``peft-core plugins``: installed plugins, their tuners, config fields and capabilities."""

from __future__ import annotations

import argparse
from typing import Any

from peft_core.contract.capabilities import declared
from peft_core.registry import registry


def _run(args: argparse.Namespace) -> int:
    plugins = registry.plugins()
    if not plugins:
        print("no peft-core plugins installed (try: pip install peft-lora)")
        return 0
    for info in plugins:
        state = "disabled" if info.disabled else ("BROKEN" if info.broken else "ok")
        print(f"{info.name}  [{state}]  {info.distribution} {info.version or ''}".rstrip())
        if info.broken:
            print(f"    error: {info.error}")
        for tuner_name in info.tuners:
            tuner = registry.tuners().get(tuner_name)
            if tuner is None:
                print(f"    tuner {tuner_name}: unavailable (name clash, see below)")
                continue
            fields = ", ".join(name for name in tuner.config_class.model_fields if name != "peft_type")
            peft_type = tuner.config_class.model_fields["peft_type"].default
            print(f"    tuner {tuner_name} ({peft_type}): {tuner.config_class.__name__}({fields})")
            if not tuner.targets_modules:
                abilities = ", ".join(declared(tuner).names()) or "none"
                print(f"      model-level adapter; capabilities: {abilities}")
    conflicts = registry.conflicts()
    for message in conflicts:
        print(f"conflict: {message}")
    return 1 if any(p.broken for p in plugins) or conflicts else 0


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Register ``plugins`` on the ``peft-core`` command line."""
    parser = commands.add_parser("plugins", help="list installed plugins, their tuners and config fields")
    parser.set_defaults(run=_run)
