"""Every entry point this repository's distributions declare loads and meets the plugin contract.

A typo in a ``pyproject.toml`` (module path, attribute, hook name) fails here, not on a
user's machine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, distribution
from pathlib import Path
from typing import Any

import pytest
import tomllib
from packaging.requirements import Requirement

from peft_core.registry import ENTRY_POINT_GROUP, STRICT_ENV, PluginRegistry

ROOT = Path(__file__).parents[2]
PROJECTS = [ROOT / "core", *sorted(ROOT.glob("plugins/*/")), *sorted(ROOT.glob("tests/plugins/*/"))]


def _meta(project: Path) -> dict[str, Any]:
    meta: dict[str, Any] = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    return meta


def _declared(group: str) -> list[tuple[str, EntryPoint]]:
    found = []
    for project in PROJECTS:
        if not (project / "pyproject.toml").is_file():
            continue
        meta = _meta(project)
        table = meta.get("scripts", {}) if group == "console_scripts" else meta.get("entry-points", {}).get(group, {})
        found += [(meta["name"], EntryPoint(name, value, group)) for name, value in table.items()]
    return found


PLUGINS = _declared(ENTRY_POINT_GROUP)
SCRIPTS = _declared("console_scripts")
# Distribution -> the repository's distributions it depends on (a variant and the plugin it extends).
DEPENDS = {
    _meta(p)["name"]: {Requirement(r).name for r in _meta(p).get("dependencies", [])}
    for p in PROJECTS
    if (p / "pyproject.toml").is_file()
}


@dataclass
class Dist:
    name: str
    version: str = "0"


@dataclass
class Declared:
    """A declared entry point as the registry sees an installed one."""

    entry_point: EntryPoint
    dist: Dist

    @property
    def name(self) -> str:
        return self.entry_point.name

    def load(self) -> object:
        return self.entry_point.load()


def test_the_repository_declares_its_plugins() -> None:
    names = {(dist, ep.name) for dist, ep in PLUGINS}
    assert {("peft-lora", "lora"), ("peft-ia3", "ia3"), ("peft-bitfit", "bitfit")} <= names
    assert ("peft-lora-scaled", "lora_scaled") in names


@pytest.mark.parametrize("dist", sorted({d for d, _ in PLUGINS}))
def test_each_declared_plugin_loads_and_meets_the_contract(dist: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each distribution's entry points, alone with those of the distributions it depends on
    (a plugin may implement a hook that its base plugin declares)."""
    wanted = {dist} | DEPENDS[dist]
    declared = [Declared(ep, Dist(d)) for d, ep in PLUGINS if d in wanted]
    monkeypatch.setenv(STRICT_ENV, "1")  # any breach of the contract raises
    monkeypatch.setattr("peft_core.registry.manager.entry_points", lambda group: list(declared))
    registry = PluginRegistry()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infos = registry.plugins()
    assert len(infos) == len(declared) and not any(i.broken or i.disabled for i in infos)
    for info in infos:
        if info.distribution != dist:
            continue
        hooks = registry.plugin_manager.get_hookcallers(registry.plugin_manager.get_plugin(f"{dist}:{info.name}"))
        assert info.tuners or hooks, f"{dist}:{info.name} provides no tuner and implements no hook"
        for name in info.tuners:
            assert registry.get_tuner(name).name == name


@pytest.mark.parametrize("dist", sorted({d for d, _ in PLUGINS}))
def test_the_installed_metadata_matches_the_declaration(dist: str) -> None:
    declared = {(ep.name, ep.value) for d, ep in PLUGINS if d == dist}
    installed = {(ep.name, ep.value) for ep in distribution(dist).entry_points if ep.group == ENTRY_POINT_GROUP}
    assert installed == declared, f"{dist} is installed from an older pyproject.toml: reinstall it"


@pytest.mark.parametrize(("dist", "entry_point"), SCRIPTS, ids=[ep.name for _, ep in SCRIPTS])
def test_console_scripts_load(dist: str, entry_point: EntryPoint) -> None:
    assert callable(entry_point.load())
