"""Summaries of repeated timings."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Stats:
    """Times of one variant, in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float
    runs: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(values_ms: list[float]) -> Stats:
    return Stats(statistics.median(values_ms), min(values_ms), max(values_ms), len(values_ms))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
