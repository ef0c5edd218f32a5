"""Helpers for tests that install plugin distributions into a folder and use them in a subprocess.

Installs are offline and fast: ``pip install --no-deps --no-build-isolation --no-index
--target DIR`` with the hatchling of this environment; the subprocess finds the plugins'
entry points through ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from peft_core.registry import DISABLE_ENV, STRICT_ENV


def pip_install(target: Path, *projects: Path) -> None:
    """Build and install source trees into ``target`` (a plain folder, not an environment)."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run([*command, "--target", str(target), *map(str, projects)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def pip_uninstall(target: Path, distribution: str) -> None:
    """What ``pip uninstall`` does, for a ``--target`` folder: delete the files its RECORD lists."""
    (info,) = target.glob(f"{distribution.replace('-', '_')}-*.dist-info")
    for line in (info / "RECORD").read_text().splitlines():
        (target / line.split(",")[0]).unlink(missing_ok=True)
    for folder in sorted(target.rglob("*"), reverse=True):  # now-empty package folders
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def python(
    args: Sequence[str], site: Path | None = None, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` with ``site`` on the path and only the given PEFT_CORE_* switches."""
    environ = {k: v for k, v in os.environ.items() if k not in (DISABLE_ENV, STRICT_ENV, "PYTHONPATH")}
    if site is not None:
        environ["PYTHONPATH"] = str(site)
    environ.update(env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=environ)


def peft_core_plugins(site: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``peft-core plugins`` as a user runs it."""
    return python(["-m", "peft_core.cli", "plugins"], site, **env)
