"""The ``peft-core`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from peft_core import cli_inspect, cli_merge
from peft_core.errors import PeftError
from peft_core.plugins import registry
from peft_core.scaffold import add_new_plugin_command


def _plugins(args: argparse.Namespace) -> int:
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
    conflicts = sorted(set(registry._conflicts.values()))
    for message in conflicts:
        print(f"conflict: {message}")
    return 1 if any(p.broken for p in plugins) or conflicts else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peft-core", description="Parameter-efficient fine-tuning, with plugins.")
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser("plugins", help="list installed plugins, their tuners and config fields")
    plugins.set_defaults(run=_plugins)
    add_new_plugin_command(commands)
    cli_inspect.add_parser(commands)
    cli_merge.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except PeftError as exc:  # e.g. a broken plugin under PEFT_CORE_STRICT_PLUGINS=1
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
