"""The hooks a peft-core plugin may implement (pluggy project name ``peft_core``).

A plugin is a module or object with functions decorated by ``hookimpl`` and named after
the specs below. Installed plugins are found through the entry-point group
``peft_core.plugins``; in-process ones are added with ``peft_core.register``. The
registry calls every hook through pluggy's ``pm.hook.<name>``; the core's own CLI
commands are a plugin of ``peft_cli_commands`` like any other.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torch import nn

    from peft_core.contract.config import PeftConfig
    from peft_core.contract.layer import AdapterLayer
    from peft_core.contract.tuner import BaseTuner

PROJECT_NAME = "peft_core"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def peft_tuners() -> list[type[BaseTuner]]:  # type: ignore[empty-body]
    """Return the tuner classes this plugin provides.

    Called once per plugin, the first time the registry is used. Each class subclasses
    ``BaseTuner`` with a unique ``name`` and a ``config_class`` with its own ``peft_type``.
    """


@hookspec(firstresult=True)
def peft_adapter_layer(
    tuner: BaseTuner, target: nn.Module, adapter_name: str, config: PeftConfig
) -> AdapterLayer | None:
    """Return an adapter layer wrapping ``target``, or None to pass.

    Called for every module a tuner is about to wrap, before the tuner's own
    ``create_layer``, so a plugin can add support for module types a tuner does not know
    (check ``tuner.name``; a bitsandbytes ``Linear4bit``, a custom conv). ``config`` is
    resolved for this module (per-module ranks applied). Return a bare layer: the engine
    adds the adapter (a layer that already holds ``adapter_name`` is accepted as it is).
    The first non-None answer wins; an exception is an error for the whole injection.
    """


@hookspec
def peft_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Declare hooks of this plugin's own, so other plugins can extend it.

    Called once for every plugin, before any tuner is used (pytest's
    ``pytest_addhooks``). Call ``plugin_manager.add_hookspecs(module_with_specs)``;
    mark the specs with ``peft_core.contract.hookspec``. peft-lora declares
    ``peft_lora_variant`` this way and calls it through ``BaseTuner.hooks``.
    """


@hookspec
def peft_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``peft-core`` subcommands: ``subparsers.add_parser(...)``.

    Called each time the command line is built. Give each parser a ``run`` default
    (``parser.set_defaults(run=function)``): ``function(args) -> int`` is called with the
    parsed arguments and its result is the exit status.
    """
