"""The benchmark harness: every scenario runs (tiny), ratios and targets are computed right,
every life-cycle operation and every method plugin has its rows, busy machines are flagged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.methods import DEDICATED, METHODS
from benchmarks.registry import SCENARIOS
from benchmarks.report import RATIOS, compute_ratios, markdown
from benchmarks.scenarios.lifecycle import DTYPES, OPERATIONS, SIZES
from benchmarks.worker import is_noisy
from peft_core.registry import registry

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_quick_mode_runs_every_scenario(tmp_path: Path) -> None:
    assert run.main(["--quick", "--in-process", "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["scenarios"]) == list(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        assert scenario["wall"] or scenario["values"], name
        assert all(stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"] for stats in scenario["wall"].values())
        assert isinstance(scenario["noisy"], bool) and len(scenario["load_average"]) == 2, name
    variants = results["scenarios"]["train_llama"]["wall"]
    assert set(variants) == {"floor", "ours", "hf", "ours_dropout", "hf_dropout", "ours_fast_dropout"}
    assert all(v["runs"] == 2 for v in variants.values())
    assert set(results["scenarios"]["peak_memory"]["values"]) >= {"floor_peak_rss_mb", "ours_peak_rss_mb"}
    for size in SIZES:
        for dtype in DTYPES:
            scenario = results["scenarios"][f"lifecycle_{size}_{dtype}"]
            assert set(scenario["wall"]) == {f"{b}_{op}" for b in ("ours", "hf") for op in OPERATIONS}
            assert {"ours_merge_and_unload_peak_mb", "hf_merge_and_unload_peak_mb"} <= set(scenario["values"])
    for case in METHODS:
        assert set(results["scenarios"][f"method_{case.name}"]["wall"]) == {
            "floor",
            "base",
            "ours_step",
            "hf_step",
            "ours_forward",
            "hf_forward",
        }
    labels = {row["label"] for row in results["ratios"] if row["ratio"] is not None}
    assert "training step, ours / HF (llama-tiny)" in labels
    assert "merge_and_unload, ours / HF (0.9B Llama, bf16)" in labels
    assert "dropout relative cost, ours / HF (GPT-2 Conv1D)" in labels
    assert "| measurement | ratio (wall) |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_each_scenario_runs_in_a_fresh_process(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    only = "lifecycle_tiny_fp32,lifecycle_large_bf16"  # the second runs each library in a process of its own
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--only", only, "--output-dir", str(tmp_path)]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    scenarios = json.loads((tmp_path / "results.json").read_text())["scenarios"]
    assert scenarios["lifecycle_tiny_fp32"]["values"]["ours_file_bytes"] > 0
    large = scenarios["lifecycle_large_bf16"]
    assert {"ours_save", "hf_load", "ours_merge_and_unload", "hf_hotswap"} <= set(large["wall"])
    assert large["values"]["parameters"] > 0 and large["other_cpu_cores"] is not None


def _stats(median: float) -> dict[str, float]:
    return {"median_ms": median, "min_ms": median - 5, "max_ms": median + 5, "runs": 3}


def test_ratios_are_medians_divided_and_checked_against_targets() -> None:
    scenarios = {
        "train_llama": {
            "wall": {
                "floor": _stats(100),
                "ours": _stats(108),
                "hf": _stats(122),
                "ours_dropout": _stats(120),
                "hf_dropout": _stats(140),
            },
            "cpu": {},
        },
        "lifecycle_tiny_fp32": {"wall": {}, "values": {"ours_file_bytes": 1000.0, "hf_file_bytes": 1000.0}},
    }
    rows = {row["label"]: row for row in compute_ratios(scenarios)}
    assert rows["training step, ours / HF (llama-tiny)"]["ratio"] == pytest.approx(108 / 122)
    assert rows["training step, ours / HF (llama-tiny)"]["met"] is True  # 0.885 <= 0.90
    assert rows["training step, ours / floor (llama-tiny)"]["met"] is True  # 1.08 <= 1.10
    assert rows["training step, HF / floor (llama-tiny)"]["met"] is None  # context only
    assert rows["training step, ours / HF (llama-tiny)"]["ratio_cpu_time"] is None
    assert rows["training step, ours / HF (llama-tiny)"]["ratio_of_minimums"] == pytest.approx((108 - 5) / (122 - 5))
    dropout = rows["dropout relative cost, ours / HF (llama-tiny)"]  # a ratio of two ratios
    assert dropout["ratio"] == pytest.approx((120 / 108) / (140 / 122)) and dropout["met"] is True
    assert rows["adapter file size, ours / HF (llama-tiny, fp32)"]["ratio"] == 1.0
    assert all(row["scenario"] in scenarios for row in rows.values())
    assert {ratio.scenario for ratio in RATIOS} <= set(SCENARIOS)


def test_a_noisy_scenario_marks_its_rows() -> None:
    assert is_noisy([0.5, 0.7], other_cores=0.1) is False
    assert is_noisy([0.5, 0.7], other_cores=0.9) is True  # another process took most of a core
    assert is_noisy([(os.cpu_count() or 1) + 1.0, 0.5], other_cores=None) is True
    scenario = {"wall": {"floor": _stats(100), "ours": _stats(108), "hf": _stats(120)}, "noisy": True}
    rows = compute_ratios({"train_llama": scenario})
    assert rows and all(row["noisy"] for row in rows)
    text = markdown({}, {"train_llama": scenario | {"other_cpu_cores": 0.9, "load_average": [2.5, 2.6]}}, rows)
    assert "| training step, ours / HF (llama-tiny) | 0.90 |" in text and "| NOISY |" in text
    assert "**NOISY**" in text and "0.90 cores" in text


def test_every_lifecycle_operation_has_a_row_at_every_size_and_dtype() -> None:
    labels = {ratio.label for ratio in RATIOS}
    for title in SIZES.values():
        for dtype in DTYPES:
            assert {f"{op}, ours / HF ({title}, {dtype})" for op in OPERATIONS} <= labels
    merges = [r for r in RATIOS if r.label.startswith("merge_and_unload, ours / HF")]
    assert len(merges) == len(SIZES) * len(DTYPES) and all(
        r.ok is not None and r.ok(0.8) and not r.ok(0.81) for r in merges
    )


def test_every_method_plugin_of_the_repo_has_its_rows() -> None:
    # A method plugin (plugins/peft-<x>, a tuner with its own config class) registers one line in
    # benchmarks/methods.py; LoRA has its own, more detailed scenarios.
    in_repo = {path.name.replace("-", "_") for path in (ROOT / "plugins").iterdir() if path.is_dir()}
    configs = {
        cls.__name__
        for cls in registry.config_classes().values()
        if cls.__module__.split(".")[0] in in_repo and cls.__name__ != "LoraConfig"
    }
    assert configs, "no method plugin found"
    missing = configs - {case.config for case in METHODS} - DEDICATED.keys()
    assert not missing, f"add these to benchmarks/methods.py: {sorted(missing)}"
    assert set(DEDICATED.values()) <= SCENARIOS.keys()
    labels = {ratio.label for ratio in RATIOS}
    for case in METHODS:
        assert f"method_{case.name}" in SCENARIOS
        assert {f"{case.title} training step, ours / HF", f"{case.title} unmerged forward, ours / HF"} <= labels


def test_update_replaces_the_rerun_scenarios_and_keeps_the_others(tmp_path: Path) -> None:
    first = ["--quick", "--in-process", "--output-dir", str(tmp_path), "--only"]
    assert run.main([*first, "mixed_linear_stack,peak_memory"]) == 0
    before = json.loads((tmp_path / "results.json").read_text())
    assert run.main([*first, "mixed_linear_stack", "--update"]) == 0
    after = json.loads((tmp_path / "results.json").read_text())
    assert list(after["scenarios"]) == ["mixed_linear_stack", "peak_memory"]  # order kept
    assert after["scenarios"]["peak_memory"] == before["scenarios"]["peak_memory"]
    assert after["scenarios"]["mixed_linear_stack"] != before["scenarios"]["mixed_linear_stack"]  # new timings
    assert [v for k, v in after["meta"].items() if k.startswith("rerun ")] == ["mixed_linear_stack"]
    assert {r["label"] for r in after["ratios"]} == {r["label"] for r in before["ratios"]}
