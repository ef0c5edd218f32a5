"""Plugins as users meet them: installed distributions, found through their entry points.

Real distributions are built and installed into a folder, and ``peft-core plugins`` runs
in a subprocess with that folder on PYTHONPATH: install and uninstall change the listing,
broken plugins are reported and isolated, name clashes name both owners, and the
PEFT_CORE_DISABLE_PLUGINS / PEFT_CORE_STRICT_PLUGINS switches work.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from peft_core.cli.scaffold import write_plugin
from plugin_installs import peft_core_plugins, pip_install, pip_uninstall, python

# Small distributions, each breaking the contract in one way: dist name -> plugin module code.
BROKEN = {
    "peft-broken-import": "import a_dependency_that_is_not_installed\n",
    "peft-bad-return": """
        from peft_core import hookimpl

        @hookimpl
        def peft_tuners():
            return "lora"
        """,
    "peft-hook-typo": """
        from peft_core import hookimpl

        @hookimpl
        def peft_tuner():
            return []
        """,
    "peft-clash": """
        from typing import Literal

        from peft_core.contract import BaseTuner, PeftConfig, hookimpl

        class ClashConfig(PeftConfig):
            peft_type: Literal["CLASH"] = "CLASH"

        class ClashTuner(BaseTuner):
            name = "lora"  # taken by peft-lora
            config_class = ClashConfig

        @hookimpl
        def peft_tuners():
            return [ClashTuner]
        """,
}


# Both owners named, in discovery order (the PYTHONPATH folder comes before site-packages).
BOTH = r"(peft-lora \(LoraTuner\) and peft-clash \(ClashTuner\)|peft-clash \(ClashTuner\) and peft-lora \(LoraTuner\))"


def _entry_name(dist: str) -> str:
    return dist.removeprefix("peft-").replace("-", "_")


def _tiny_distribution(root: Path, dist: str, code: str) -> Path:
    package = _entry_name(dist) + "_plugin"
    (root / dist / package).mkdir(parents=True)
    (root / dist / package / "__init__.py").write_text(textwrap.dedent(code))
    (root / dist / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "{dist}"
        version = "0.1.0"

        [project.entry-points."peft_core.plugins"]
        {_entry_name(dist)} = "{package}"

        [tool.hatch.build.targets.wheel]
        packages = ["{package}"]
        """)
    )
    return root / dist


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a working plugin (``peft-core new-plugin demo``) and the broken ones installed."""
    root = tmp_path_factory.mktemp("lifecycle")
    write_plugin("demo", root / "peft-demo")
    projects = [root / "peft-demo"] + [_tiny_distribution(root, dist, code) for dist, code in BROKEN.items()]
    pip_install(root / "site", *projects)
    return root / "site"


@pytest.mark.slow
def test_installed_plugins_are_listed_and_broken_ones_reported_and_isolated(site: Path) -> None:
    result = peft_core_plugins(site)
    out = result.stdout
    assert result.returncode == 1  # something is broken: fail, for scripts and CI
    assert "demo  [ok]  peft-demo 0.1.0" in out and "tuner demo (DEMO): DemoConfig(" in out
    assert "ia3  [ok]  peft-ia3" in out and "bitfit  [ok]  peft-bitfit" in out  # the rest keeps working
    assert "broken_import  [BROKEN]  peft-broken-import 0.1.0" in out
    assert "No module named 'a_dependency_that_is_not_installed'" in out
    assert "bad_return  [BROKEN]" in out and "peft_tuners must return a list of BaseTuner classes, got str" in out
    assert "hook_typo  [BROKEN]" in out and "peft_tuner" in out
    assert re.search(rf"conflict: tuner name 'lora' is claimed by two plugins: {BOTH}", out)
    assert result.stderr.count("RuntimeWarning") == 3  # one warning per broken plugin


def test_a_clashing_name_is_a_clear_error_when_used(site: Path) -> None:
    code = (
        "import peft_core\ntry:\n    peft_core.registry.get_tuner('lora')\nexcept peft_core.PluginConflictError as e:\n"
    )
    result = python(["-W", "ignore", "-c", code + "    print(e)"], site)
    assert re.search(rf"{BOTH}; uninstall one", result.stdout), result.stderr


def test_disabled_plugins_are_not_imported(site: Path) -> None:
    blocked = "broken_import,bad_return,hook_typo,peft-clash"  # entry-point or distribution names
    result = peft_core_plugins(site, PEFT_CORE_DISABLE_PLUGINS=blocked)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("broken_import", "bad_return", "hook_typo", "clash"):
        assert f"{name}  [disabled]" in result.stdout
    assert "conflict" not in result.stdout and "RuntimeWarning" not in result.stderr
    assert "lora  [ok]  peft-lora" in result.stdout


def test_strict_mode_turns_a_broken_plugin_into_an_error(site: Path) -> None:
    result = peft_core_plugins(site, PEFT_CORE_STRICT_PLUGINS="1")
    assert result.returncode == 1
    assert "error: peft-core plugin" in result.stderr and "(PEFT_CORE_STRICT_PLUGINS is set)" in result.stderr


def test_uninstalling_removes_the_plugin_from_the_listing(site: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(site, tmp_path / "site")
    pip_uninstall(copy, "peft-demo")
    assert not (copy / "peft_demo").exists()
    result = peft_core_plugins(copy, PEFT_CORE_DISABLE_PLUGINS="broken_import,bad_return,hook_typo,clash")
    assert result.returncode == 0 and "demo" not in result.stdout and "peft-lora" in result.stdout
