"""The peft-core console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peft_core.cli import main


def test_plugins_lists_installed_plugins_with_versions_tuners_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "lora  [ok]  peft-lora 0.1.0" in out
    assert "ia3  [ok]  peft-ia3 0.1.0" in out
    assert "tuner lora (LORA): LoraConfig(" in out and "lora_alpha" in out
    assert "tuner ia3 (IA3): IA3Config(" in out and "feedforward_modules" in out


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "peft-core"  # installed beside the interpreter
    result = subprocess.run([exe, "plugins"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "peft-lora" in result.stdout


def test_plugins_reports_broken_plugins_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from peft_core.registry import manager, registry

    class Dist:
        name, version = "bad-dist", "0.3"

    class BadEntryPoint:
        name, dist = "bad", Dist()

        def load(self) -> None:
            raise ImportError("cannot import name 'x'")

    monkeypatch.setattr(manager, "entry_points", lambda group: [BadEntryPoint()])
    registry.reset()
    try:
        with pytest.warns(RuntimeWarning):
            assert main(["plugins"]) == 1
    finally:
        monkeypatch.undo()
        registry.reset()
    out = capsys.readouterr().out
    assert "bad  [BROKEN]  bad-dist 0.3" in out and "cannot import name 'x'" in out
