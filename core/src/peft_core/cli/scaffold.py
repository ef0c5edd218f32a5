"""``peft-core new-plugin NAME [--kind module|prompt]``: write a tuner plugin that installs and
passes its own tests.

Each kind is a small working method in the layout ``docs/writing-a-tuner.md`` walks through:
``module`` wraps ``nn.Linear`` targets (a learned scale and shift per output feature: config,
layer, tuner), ``prompt`` changes the model's inputs (a learned shift of the input
embeddings: config, tuner with model-level hooks); both with pyproject and entry point,
plugin module and a test on ``peft_core.testing``. Replace the math; the contract stays.
"""

from __future__ import annotations

import argparse
import re
import string
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path

from peft_core.errors import ConfigError
from peft_core.registry import registry

# template file -> path in the new plugin (formatted with the names); a kind has those it has
TEMPLATES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/{package}/__init__.py",
    "config.py.tmpl": "src/{package}/config.py",
    "layer.py.tmpl": "src/{package}/layer.py",
    "tuner.py.tmpl": "src/{package}/tuner.py",
    "plugin.py.tmpl": "src/{package}/plugin.py",
    "test.py.tmpl": "tests/test_{name}.py",
}
KINDS = ("module", "prompt")
EMPTY_FILES = ("src/{package}/py.typed",)
_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")


@dataclass(frozen=True)
class PluginNames:
    """Every name the plugin needs, derived from the one the user gives (e.g. "scale-shift")."""

    name: str  # tuner and entry-point name: scale_shift
    distribution: str  # peft-scale-shift
    package: str  # peft_scale_shift
    class_prefix: str  # ScaleShift
    peft_type: str  # SCALE_SHIFT

    @classmethod
    def from_name(cls, raw: str) -> PluginNames:
        base = re.sub(r"^peft[-_]", "", raw.strip())
        if not _NAME.fullmatch(base):
            raise ConfigError(
                f"invalid plugin name {raw!r}: use lowercase letters, digits and single '-' or '_' between "
                "words, starting with a letter (e.g. 'scale-shift')"
            )
        words = re.split(r"[-_]", base)
        return cls(
            name="_".join(words),
            distribution="peft-" + "-".join(words),
            package="peft_" + "_".join(words),
            class_prefix="".join(w.capitalize() for w in words),
            peft_type="_".join(words).upper(),
        )


def _core_requirement() -> str:
    try:
        core_version = version("peft-core")
    except PackageNotFoundError:  # a source tree
        core_version = "0.0.0"
    major, minor = (int(part) for part in core_version.split(".")[:2])
    # 0.x releases may break the contract in a minor version: pin to this one.
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f"peft-core>={major}.{minor},<{upper}"


def render(names: PluginNames, kind: str = "module") -> dict[str, str]:
    """The plugin's files: relative path -> text (``kind``: "module" or "prompt")."""
    if kind not in KINDS:
        raise ConfigError(f"unknown plugin kind {kind!r}; choose one of {', '.join(KINDS)}")
    values = {
        "name": names.name,
        "distribution": names.distribution,
        "package": names.package,
        "Class": names.class_prefix,
        "peft_type": names.peft_type,
        "title": names.class_prefix,
        "core_requirement": _core_requirement(),
    }
    folder = files("peft_core") / "templates" / kind
    rendered = {}
    for template, target in TEMPLATES.items():
        if not (folder / template).is_file():
            continue
        text = string.Template((folder / template).read_text(encoding="utf-8")).substitute(values)
        rendered[target.format(name=names.name, package=names.package)] = text
    for target in EMPTY_FILES:
        rendered[target.format(name=names.name, package=names.package)] = ""
    return rendered


def write_plugin(
    raw_name: str, directory: str | Path | None = None, kind: str = "module"
) -> tuple[PluginNames, Path, list[str]]:
    """Write the skeleton of plugin ``raw_name`` of ``kind`` into ``directory`` (default ``./peft-<name>``).

    Refuses a name an installed tuner already has and a folder that is not empty; nothing
    is written then. Returns the names, the folder and the files written.
    """
    names = PluginNames.from_name(raw_name)
    taken = registry.tuners().get(names.name)
    if taken is not None:
        raise ConfigError(f"a tuner named {names.name!r} is installed already ({taken.__module__}); pick another name")
    root = Path(directory) if directory is not None else Path(names.distribution)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root} exists and is not an empty folder; choose another --dir")
    rendered = render(names, kind)
    for relative, text in rendered.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return names, root, sorted(rendered)


def _run(args: argparse.Namespace) -> int:
    names, root, written = write_plugin(args.name, args.dir, args.kind)  # errors: reported by cli.main
    print(f"created {names.distribution} (tuner {names.name!r}, peft_type {names.peft_type!r}) in {root}:")
    for relative in written:
        print(f"  {relative}")
    print(f"next:\n  cd {root}\n  pip install -e '.[test]'\n  pytest\n  peft-core plugins")
    where = "layer.py" if args.kind == "module" else "tuner.py"
    print(f"then replace the method in src/{names.package}/{where} (see docs/writing-a-tuner.md)")
    return 0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``new-plugin`` on the ``peft-core`` command line."""
    parser = commands.add_parser("new-plugin", help="write the skeleton of a tuner plugin (installs, passes its tests)")
    parser.add_argument("name", help="method name, e.g. 'scale-shift' (gives peft-scale-shift, ScaleShiftConfig)")
    parser.add_argument("--dir", type=Path, default=None, help="folder to create (default: ./peft-<name>)")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="module",
        help="module: wraps target modules (LoRA-like); prompt: changes the model's inputs (prompt-tuning-like)",
    )
    parser.set_defaults(run=_run)
