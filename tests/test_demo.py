"""The README's main job, on a slice of the data so that it runs in the test suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parents[1] / "examples" / "sentiment_demo.py"


@pytest.mark.slow
def test_demo_fine_tunes_saves_reloads_and_merges(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--limit", "600", "--epochs", "2", "--output-dir", str(tmp_path / "adapter")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "frozen encoder + linear probe: held-out accuracy" in out
    assert "merged vs unmerged: same predictions: True" in out
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size > 100_000
    accuracy = float(out.split("LoRA fine-tune: held-out accuracy ")[1].split("%")[0])
    assert accuracy > 70.0  # 600 words, 2 epochs; the full run reaches ~96%
