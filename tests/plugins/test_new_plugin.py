"""``peft-core new-plugin``: the skeleton installs and passes its own tests; the docs show exactly it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peft_core import ConfigError
from peft_core.cli import main
from peft_core.cli.scaffold import PluginNames, render, write_plugin
from plugin_installs import peft_core_plugins, pip_install, python

DOC = Path(__file__).parents[2] / "docs" / "writing-a-tuner.md"


# The two worked examples of the docs: (name, kind, first config fields listed, tests run by its suite).
EXAMPLES = {
    "ssf": ("module", "task_type, inference_mode, base_model_name_or_path, revision, target_modules, ", "14 passed"),
    "embed-shift": ("prompt", "task_type, inference_mode, base_model_name_or_path, revision, token_dim, ", "13 passed"),
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``peft-core new-plugin`` of both examples, unchanged, installed into one folder: (sources, site)."""
    root = tmp_path_factory.mktemp("new-plugin")
    for name, (kind, _, _) in EXAMPLES.items():
        write_plugin(name, root / f"peft-{name}", kind)
    pip_install(root / "site", *(root / f"peft-{name}" for name in EXAMPLES))
    return root, root / "site"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_generated_plugin_installs_and_passes_its_own_tests(installed: tuple[Path, Path], name: str) -> None:
    root, site = installed
    _, fields, passed = EXAMPLES[name]
    result = python(["-m", "pytest", "-q", "-p", "no:cacheprovider"], site, cwd=root / f"peft-{name}")
    assert result.returncode == 0, result.stdout + result.stderr
    # module: 12 conformance checks + 2 of its own; prompt: 12 checks, 1 skipped (merge_and_unload), + 2
    assert re.search(rf"\b{passed}\b", result.stdout), result.stdout
    names = PluginNames.from_name(name)
    listing = peft_core_plugins(site).stdout
    assert f"{names.name}  [ok]  {names.distribution} 0.1.0" in listing
    assert f"tuner {names.name} ({names.peft_type}): {names.class_prefix}Config({fields}" in listing


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_docs_show_exactly_the_generated_files(name: str) -> None:
    names = PluginNames.from_name(name)
    generated = render(names, EXAMPLES[name][0])
    shown = re.findall(r'```\w+ title="([^"]+)"\n(.*?)\n```', DOC.read_text(), flags=re.S)
    blocks = {
        path.removeprefix(f"{names.distribution}/"): text
        for path, text in shown
        if path.startswith(names.distribution + "/")
    }
    assert set(blocks) == set(generated) - {"README.md", f"src/{names.package}/py.typed"}
    for path, text in blocks.items():
        assert text + "\n" == generated[path], f"{DOC.name} shows an outdated {path}: paste in the generated one"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("scale-shift", ("scale_shift", "peft-scale-shift", "peft_scale_shift", "ScaleShift", "SCALE_SHIFT")),
        ("peft-ssf", ("ssf", "peft-ssf", "peft_ssf", "Ssf", "SSF")),
        ("lo_ra2", ("lo_ra2", "peft-lo-ra2", "peft_lo_ra2", "LoRa2", "LO_RA2")),
    ],
)
def test_names_derive_from_one(raw: str, expected: tuple[str, ...]) -> None:
    names = PluginNames.from_name(raw)
    assert (names.name, names.distribution, names.package, names.class_prefix, names.peft_type) == expected


@pytest.mark.parametrize("raw", ["", "Ssf", "2d", "a--b", "a b", "-a", "peft-", "a.b"])
def test_invalid_names_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="invalid plugin name"):
        PluginNames.from_name(raw)


def test_the_command_writes_the_skeleton_and_says_what_next(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", "scale-shift", "--dir", str(tmp_path / "p")]) == 0
    written = sorted(str(p.relative_to(tmp_path / "p")) for p in (tmp_path / "p").rglob("*") if p.is_file())
    assert written == sorted(render(PluginNames.from_name("scale-shift")))
    assert not any("${" in (tmp_path / "p" / f).read_text() for f in written)
    pyproject = (tmp_path / "p" / "pyproject.toml").read_text()
    assert '[project.entry-points."peft_core.plugins"]\nscale_shift = "peft_scale_shift.plugin"' in pyproject
    assert '"peft-core>=0.1,<0.2"' in pyproject
    out = capsys.readouterr().out
    assert "created peft-scale-shift (tuner 'scale_shift', peft_type 'SCALE_SHIFT')" in out
    assert "pip install -e '.[test]'" in out


def test_the_default_folder_is_named_after_the_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, root, _ = write_plugin("ssf")
    assert root == Path("peft-ssf") and (tmp_path / "peft-ssf" / "src" / "peft_ssf" / "layer.py").is_file()


def test_a_used_folder_or_an_installed_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert main(["new-plugin", "ssf", "--dir", str(tmp_path / "used")]) == 1
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]
    assert main(["new-plugin", "lora", "--dir", str(tmp_path / "new")]) == 1
    assert "a tuner named 'lora' is installed already" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
