"""Run the benchmark suite: every scenario in a fresh process, then the ratio table.

python -m benchmarks.run                 # full suite, CPU, writes benchmarks/results.{md,json}
python -m benchmarks.run --quick         # every scenario tiny: a smoke test (benchmarks/out/)
python -m benchmarks.run --device cuda   # on a GPU (results-cuda.{md,json})
python -m benchmarks.run --only mixed_decode,lifecycle_tiny_fp32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from benchmarks.registry import SCENARIOS
from benchmarks.report import compute_ratios, markdown
from benchmarks.worker import run_scenario

ROOT = Path(__file__).resolve().parents[1]


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def run_worker(scenario: str, variant: str | None, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Run one scenario (one variant) in a fresh Python process."""
    if args.in_process:
        torch.set_num_threads(args.threads)
        return run_scenario(scenario, variant, args.quick, args.device)
    output = scratch / f"{scenario}-{variant or 'all'}.json"
    command = [sys.executable, "-m", "benchmarks.worker", scenario, "--device", args.device]
    command += ["--threads", str(args.threads), "--output", str(output)]
    command += ["--quick"] if args.quick else []
    command += ["--variant", variant] if variant else []
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"scenario {scenario} ({variant or 'all variants'}) failed:\n{completed.stderr[-4000:]}")
    record: dict[str, Any] = json.loads(output.read_text())
    return record


def merge_variants(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One scenario record from the records of its isolated variants."""
    merged: dict[str, Any] = {"wall": {}, "cpu": {}, "values": {}, "notes": [], "seconds": 0.0}
    for record in records:
        for key in ("wall", "cpu", "values"):
            merged[key].update(record[key])
        merged["notes"] += record["notes"]
        merged["seconds"] += record["seconds"]
    merged["load_average"] = [
        min(r["load_average"][0] for r in records),
        max(r["load_average"][1] for r in records),
    ]
    cores = [(r["other_cpu_cores"], r["seconds"]) for r in records if r.get("other_cpu_cores") is not None]
    seconds = sum(s for _, s in cores)
    merged["other_cpu_cores"] = sum(c * s for c, s in cores) / seconds if seconds else None
    merged["noisy"] = any(r.get("noisy") for r in records)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models and 2 runs: a smoke test")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help=f"cpu or cuda (default here: {default_device})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in every worker (default 1)")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the other scenarios of the existing results file, replacing those run now (rerun NOISY rows)",
    )
    parser.add_argument(
        "--in-process", action="store_true", help="run scenarios in this process (smoke tests only: no isolation)"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="default: benchmarks/ (benchmarks/out/ if --quick)"
    )
    args = parser.parse_args(argv)

    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {sorted(SCENARIOS)}")
    output_dir = args.output_dir or (ROOT / "benchmarks" / ("out" if args.quick else ""))
    output_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else f"-{args.device}"

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()
    scenarios: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="peft-bench-") as scratch:
        for name in names:
            scenario = SCENARIOS[name]
            print(f"[bench] {name} (load {os.getloadavg()[0]:.2f})", flush=True)
            variants = scenario.isolated_variants or (None,)
            record = merge_variants([run_worker(name, v, args, Path(scratch)) for v in variants])
            record["doc"] = " ".join((scenario.run.__doc__ or "").split())
            scenarios[name] = record
            print(f"[bench] {name}: {record['seconds']:.1f} s", flush=True)
    meta = {
        "started": started,
        "mode": ("quick (smoke test)" if args.quick else "full") + (", in one process" if args.in_process else ""),
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "cpu": platform.processor() or platform.machine(),
        "logical CPUs": os.cpu_count(),
        "torch threads per worker": args.threads,
        "load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in load_start),
        "load average (1/5/15 min) at end": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft-core": _version("peft-core"),
        "peft (Hugging Face)": _version("peft"),
    }
    results_file = output_dir / f"results{suffix}.json"
    if args.update and results_file.is_file():
        previous = json.loads(results_file.read_text())
        rerun = ", ".join(scenarios)
        scenarios = {**previous["scenarios"], **scenarios}
        meta = {**previous["meta"], f"rerun {started}": rerun}
    noisy = [name for name, record in scenarios.items() if record.get("noisy")]
    meta["NOISY scenarios (machine busy: see each scenario)"] = ", ".join(noisy) if noisy else "none"
    ratios = compute_ratios(scenarios)
    results_file.write_text(json.dumps({"meta": meta, "scenarios": scenarios, "ratios": ratios}, indent=1))
    (output_dir / f"results{suffix}.md").write_text(markdown(meta, scenarios, ratios) + "\n")
    missed = [row["label"] for row in ratios if row["met"] is False]
    print(f"[bench] wrote {output_dir / f'results{suffix}.md'}; targets missed: {missed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
