"""The core's own ``peft-core`` commands: a ``peft_cli_commands`` plugin like any other."""

from __future__ import annotations

import argparse
from typing import Any

from peft_core.cli import inspect, merge, plugins_command, scaffold
from peft_core.contract.hookspecs import hookimpl


@hookimpl
def peft_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    plugins_command.add_parser(subparsers)
    scaffold.add_parser(subparsers)
    inspect.add_parser(subparsers)
    merge.add_parser(subparsers)
