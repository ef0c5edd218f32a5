"""Run one scenario in this (fresh) process and write its result as JSON: used by ``benchmarks.run``."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks.context import NOISY_OTHER_CORES, Context, load_average, machine_cpu_seconds, peak_rss_mb
from benchmarks.registry import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--variant", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    record = run_scenario(args.scenario, args.variant, args.quick, args.device)
    args.output.write_text(json.dumps(record, indent=1))
    return 0


def run_scenario(name: str, variant: str | None, quick: bool, device: str) -> dict[str, Any]:
    """Run one scenario here, seeded, and return its record (timings, values, load, seconds)."""
    torch.manual_seed(0)
    random.seed(0)
    ctx = Context(quick=quick, device=torch.device(device), variant=variant)
    load_before, start = load_average(), time.perf_counter()
    machine_before, own_before = machine_cpu_seconds(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library notices are not results
        result = SCENARIOS[name].run(ctx)
    seconds = time.perf_counter() - start
    machine_after, own = machine_cpu_seconds(), time.process_time() - own_before
    other_cores = None
    if machine_before is not None and machine_after is not None and seconds > 0:
        other_cores = max(0.0, (machine_after - machine_before - own) / seconds)
    loads = [load_before, load_average()]
    return result.as_dict() | {
        "seconds": seconds,
        "load_average": loads,
        "other_cpu_cores": other_cores,
        "noisy": is_noisy(loads, other_cores),
        "process_peak_rss_mb": peak_rss_mb(),
    }


def is_noisy(loads: list[float], other_cores: float | None) -> bool:
    """Whether other work on the machine was large enough to make this scenario's timings unreliable."""
    busy_load = max(loads) > (os.cpu_count() or 1)
    return busy_load or (other_cores is not None and other_cores > NOISY_OTHER_CORES)


if __name__ == "__main__":
    sys.exit(main())
