"""The entry point of peft-lora (group ``peft_core.plugins``, name ``lora``)."""

from __future__ import annotations

import argparse
from typing import Any

import pluggy

from peft_core.contract import BaseTuner, hookimpl
from peft_lora import convert_command, hookspecs
from peft_lora.tuner import LoraTuner


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [LoraTuner]


@hookimpl
def peft_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def peft_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    convert_command.add_parser(subparsers)
