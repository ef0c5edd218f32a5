"""Entry point ``input_shift``: the tuner, the plugin's own hookspec and a CLI command."""

from __future__ import annotations

import argparse
from typing import Any

import pluggy

from peft_core.contract import BaseTuner, hookimpl
from peft_input_shift import hookspecs
from peft_input_shift.method import InputShiftTuner


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [InputShiftTuner]


@hookimpl
def peft_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    plugin_manager.add_hookspecs(hookspecs)


def _info(args: argparse.Namespace) -> int:
    print(f"input_shift: a learned shift of the input embeddings, dim {args.dim}")
    return 0


@hookimpl
def peft_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("input-shift-info", help="describe the input_shift test method")
    parser.add_argument("--dim", type=int, default=8)
    parser.set_defaults(run=_info)
