"""Every plugin in the repository uses the public contract only.

From the core a plugin imports ``peft_core`` (the user API) and ``peft_core.contract``,
nothing else; another plugin only if its pyproject depends on it (a variant extends its
base plugin), never a sibling. import-linter checks the core's layers in ``nox -s lint``;
this test holds every plugin distribution of the tree, test-only ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).parents[2]
DISTRIBUTIONS = sorted(
    p.parent for p in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("tests/plugins/*/pyproject.toml")]
)
ALLOWED_CORE = {"peft_core", "peft_core.contract"}


def _package(distribution: str) -> str:
    return distribution.replace("-", "_")


PLUGIN_PACKAGES = {
    _package(tomllib.loads((d / "pyproject.toml").read_text())["project"]["name"]) for d in DISTRIBUTIONS
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("folder", DISTRIBUTIONS, ids=[d.name for d in DISTRIBUTIONS])
def test_a_plugin_imports_only_the_contract_and_the_plugins_it_extends(folder: Path) -> None:
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    own = _package(project["name"])
    depends_on = {_package(Requirement(req).name) for req in project.get("dependencies", [])}
    wrong = []
    for path in sorted((folder / "src").rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top == "peft_core" and module not in ALLOWED_CORE:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} (use peft_core.contract)")
            elif top in PLUGIN_PACKAGES and top != own and top not in depends_on:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports the sibling plugin {top}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_every_plugin_of_the_repository() -> None:
    assert {"peft_lora", "peft_ia3", "peft_bitfit"} <= PLUGIN_PACKAGES
