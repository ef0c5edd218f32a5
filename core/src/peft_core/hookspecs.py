"""The hooks a peft-core plugin may implement (pluggy project name ``peft_core``).

A plugin is a module or object with functions decorated by ``peft_core.hookimpl`` and
named after the specs below. Installed plugins are found through the entry-point group
``peft_core.plugins``; in-process ones are added with ``peft_core.register``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from torch import nn

    from peft_core.config import PeftConfig
    from peft_core.layer import AdapterLayer
    from peft_core.tuner import BaseTuner

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
    """Return an adapter layer wrapping ``target`` with ``adapter_name`` added, or None.

    Called for every module a tuner is about to wrap, before the tuner's own dispatch, so
    a plugin can add support for module types a tuner does not know (check
    ``tuner.name``). ``config`` is already resolved for this module (per-module ranks
    applied). The first non-None answer wins; return None to pass.
    """
