"""What a scenario gets (device, sizes, repetition counts) and what it returns."""

from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import Stats, summarize, synchronize


@dataclass
class Context:
    """One scenario run. ``quick`` shrinks models and repetitions to a smoke test."""

    quick: bool
    device: torch.device
    variant: str | None = None  # set for scenarios whose variants each need a fresh process

    def runs(self, full: int) -> int:
        return 2 if self.quick else full

    def warmup(self, full: int) -> int:
        return 1 if self.quick else full


@dataclass
class Result:
    """Timings per variant (wall clock and, on the CPU, process CPU time) and other values."""

    wall: dict[str, Stats] = field(default_factory=dict)
    cpu: dict[str, Stats] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall": {k: v.as_dict() for k, v in self.wall.items()},
            "cpu": {k: v.as_dict() for k, v in self.cpu.items()},
            "values": self.values,
            "notes": self.notes,
        }


def measure(
    variants: dict[str, Callable[[], object]], ctx: Context, warmup: int, runs: int, result: Result | None = None
) -> Result:
    """Warm every variant up, then time ``runs`` rounds of all variants in turn (interleaved,
    so a change of machine load hits every variant alike)."""
    result = result or Result()
    for _ in range(ctx.warmup(warmup)):
        for fn in variants.values():
            fn()
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ctx.runs(runs)):
        for name, fn in variants.items():
            synchronize(ctx.device)
            start_cpu, start = time.process_time(), time.perf_counter()
            fn()
            synchronize(ctx.device)
            wall[name].append((time.perf_counter() - start) * 1000)
            cpu[name].append((time.process_time() - start_cpu) * 1000)
    for name in variants:
        result.wall[name] = summarize(wall[name])
        if ctx.device.type == "cpu":
            result.cpu[name] = summarize(cpu[name])
    return result


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> float:
    return os.getloadavg()[0]


def _status_kb(field_name: str) -> int:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field_name} in /proc/self/status")
    return int(match.group(1))


@dataclass
class PeakAdded:
    """Set when the block of ``peak_added_mb`` ends: MB the block added at its peak, or None."""

    mb: float | None = None


@contextmanager
def peak_added_mb() -> Iterator[PeakAdded]:
    """Measure the most resident memory the block added over what was resident before it.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``, Linux >= 4.0) so the
    peak is this block's, not the process's; elsewhere the result stays None.
    """
    peak = PeakAdded()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
    except OSError:
        yield peak
        return
    yield peak
    peak.mb = max(0.0, (_status_kb("VmHWM") - before) / 1024)


def machine_cpu_seconds() -> float | None:
    """CPU time (s) every process on the machine has used since boot (Linux ``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = sum(int(value) for i, value in enumerate(fields) if i not in (3, 4))  # not idle, not iowait
    return ticks / os.sysconf("SC_CLK_TCK")


#: A scenario is NOISY when other processes used more than this many cores on average while it
#: ran, or the 1-minute load average exceeded the logical CPUs: its ratios are less reliable.
NOISY_OTHER_CORES = 0.5
