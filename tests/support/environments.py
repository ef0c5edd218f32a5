"""Python environments without some plugins, for tests of what a user sees before installing them.

``site_without(folder, packages)`` builds a folder that shows every importable entry of
``sys.path`` except the given import packages and their distributions' metadata (so their
entry points are gone too): what an environment looks like after ``pip uninstall``.
``python_in(site, args)`` runs ``python -S ARGS`` there (-S: no site-packages but the folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: The plugins built on peft-lora (they go when it goes), and on peft-dora.
ON_LORA = ("peft_lora", "peft_dora", "peft_bnb")
ON_DORA = ("peft_dora", "peft_bnb")


def site_without(folder: Path, packages: Sequence[str]) -> Path:
    """A folder of links to everything importable except ``packages`` (import names) and their metadata.

    Per name the first entry of ``sys.path`` wins, as for imports, except that a folder
    without ``__init__.py`` (a test folder such as ``tests/transformers``) does not hide a
    real package of that name further on.
    """
    folder.mkdir()
    chosen: dict[str, Path] = {}
    for entry in map(Path, sys.path):
        if not entry.is_dir() or entry == Path.cwd():
            continue
        for child in entry.iterdir():
            if any(package in child.name.replace("-", "_") for package in packages) or not _importable(child):
                continue
            first = chosen.get(child.name)
            if first is None or (_namespace_like(first) and not _namespace_like(child)):
                chosen[child.name] = child
    for name, child in chosen.items():
        (folder / name).symlink_to(child)
    return folder


def _importable(path: Path) -> bool:
    # sys.path[0] is the scripts folder when pytest runs as a script: its console scripts
    # (transformers has one named "transformers") must not hide the packages.
    return path.is_dir() or path.suffix in (".py", ".so", ".pyd", ".pth")


def _namespace_like(path: Path) -> bool:
    return path.is_dir() and not (path / "__init__.py").exists() and "." not in path.name


def python_in(site: Path, args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -S ARGS`` seeing only ``site``, without any PEFT_CORE_* switch of this process."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PEFT_CORE_") and k != "PYTHONPATH"}
    environ["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-S", *args], capture_output=True, text=True, cwd=cwd, env=environ)
