"""The entry point of peft-lora (group ``peft_core.plugins``, name ``lora``)."""

from __future__ import annotations

import argparse
from typing import Any

import pluggy

from peft_core.contract import BaseTuner, hookimpl
from peft_lora import convert_command, hookspecs
from peft_lora.config import LoraConfig
from peft_lora.lora_bias import LoraBiasVariant
from peft_lora.tuner import LoraTuner
from peft_lora.variant import LoraVariant


@hookimpl
def peft_tuners() -> list[type[BaseTuner]]:
    return [LoraTuner]


@hookimpl
def peft_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def peft_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    convert_command.add_parser(subparsers)


@hookimpl
def peft_lora_variant(config: LoraConfig) -> LoraVariant | None:
    """peft-lora's own variants, through the hook that other plugins use (``lora_bias``)."""
    flags = {flag for flag in config.variant_flags if getattr(config, flag)}
    if flags == {"lora_bias"}:
        return LoraBiasVariant()
    return None
