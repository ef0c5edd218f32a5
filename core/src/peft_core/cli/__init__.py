"""The ``peft-core`` command line: its subcommands come from ``peft_cli_commands`` hooks
(the core's own in ``peft_core.cli.commands``, plugins' beside them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from peft_core.cli import commands
from peft_core.errors import PeftError
from peft_core.registry import registry

CORE_COMMANDS = "peft-core-commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peft-core", description="Parameter-efficient fine-tuning, with plugins.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    manager = registry.plugin_manager
    if not manager.is_registered(commands):
        manager.register(commands, name=CORE_COMMANDS)
    registry.hook.peft_cli_commands(subparsers=subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except PeftError as exc:  # e.g. a broken plugin under PEFT_CORE_STRICT_PLUGINS=1
        print(f"error: {exc}", file=sys.stderr)
        return 1
