"""The benchmark harness: every scenario runs (tiny), ratios and targets are computed right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.registry import SCENARIOS
from benchmarks.report import RATIOS, compute_ratios

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_quick_mode_runs_every_scenario(tmp_path: Path) -> None:
    assert run.main(["--quick", "--in-process", "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["scenarios"]) == list(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        assert scenario["wall"] or scenario["values"], name
        assert all(stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"] for stats in scenario["wall"].values())
    variants = results["scenarios"]["train_llama"]["wall"]
    assert set(variants) == {"floor", "ours", "hf"} and all(v["runs"] == 2 for v in variants.values())
    assert set(results["scenarios"]["peak_memory"]["values"]) >= {"floor_peak_rss_mb", "ours_peak_rss_mb"}
    labels = {row["label"] for row in results["ratios"] if row["ratio"] is not None}
    assert "training step, ours / HF (llama-tiny)" in labels and "merge_and_unload, 0.9B Llama, ours / HF" in labels
    assert "| measurement | ratio (wall) |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_each_scenario_runs_in_a_fresh_process(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--only", "save_load", "--output-dir", str(tmp_path)]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    scenario = json.loads((tmp_path / "results.json").read_text())["scenarios"]["save_load"]
    assert scenario["values"]["ours_file_bytes"] > 0 and set(scenario["wall"]) >= {"ours_save", "hf_load"}


def _stats(median: float) -> dict[str, float]:
    return {"median_ms": median, "min_ms": median - 5, "max_ms": median + 5, "runs": 3}


def test_ratios_are_medians_divided_and_checked_against_targets() -> None:
    scenarios = {
        "train_llama": {"wall": {"floor": _stats(100), "ours": _stats(108), "hf": _stats(122)}, "cpu": {}},
        "save_load": {"wall": {}, "values": {"ours_file_bytes": 1000.0, "hf_file_bytes": 1000.0}},
    }
    rows = {row["label"]: row for row in compute_ratios(scenarios)}
    assert rows["training step, ours / HF (llama-tiny)"]["ratio"] == pytest.approx(108 / 122)
    assert rows["training step, ours / HF (llama-tiny)"]["met"] is True  # 0.885 <= 0.90
    assert rows["training step, ours / floor (llama-tiny)"]["met"] is True  # 1.08 <= 1.10
    assert rows["training step, HF / floor (llama-tiny)"]["met"] is None  # context only
    assert rows["training step, ours / HF (llama-tiny)"]["ratio_cpu_time"] is None
    assert rows["training step, ours / HF (llama-tiny)"]["ratio_of_minimums"] == pytest.approx((108 - 5) / (122 - 5))
    assert rows["adapter file size, ours / HF"]["ratio"] == 1.0
    assert all(row["scenario"] in scenarios for row in rows.values())
    assert {ratio.scenario for ratio in RATIOS} <= set(SCENARIOS)
