"""Ratios taken inside one run, their targets, and the markdown table."""

from __future__ import annotations

from typing import Any

from benchmarks.ratios import RATIOS, Ratio

__all__ = ["RATIOS", "Ratio", "compute_ratios", "lookup", "markdown"]


def lookup(scenario: dict[str, Any], key: str, clock: str, statistic: str = "median_ms") -> float | None:
    """A median (or ``statistic``, ms) of clock ``wall``/``cpu``, or a plain value, by name."""
    if key in scenario.get("values", {}):
        return float(scenario["values"][key])
    stats = scenario.get(clock, {}).get(key)
    return None if stats is None else float(stats[statistic])


def _divide(scenario: dict[str, Any], numerator: str, denominator: str, clock: str, statistic: str) -> float | None:
    num = lookup(scenario, numerator, clock, statistic)
    den = lookup(scenario, denominator, clock, statistic)
    return None if num is None or den is None or den == 0 else num / den


def compute_ratios(scenarios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for ratio in RATIOS:
        scenario = scenarios.get(ratio.scenario)
        if scenario is None:
            continue
        values: dict[str, float | None] = {}
        for column, clock, statistic in (
            ("wall", "wall", "median_ms"),
            ("cpu", "cpu", "median_ms"),
            ("min", "wall", "min_ms"),
        ):
            value = _divide(scenario, ratio.numerator, ratio.denominator, clock, statistic)
            if ratio.per is not None and value is not None:
                per = _divide(scenario, *ratio.per, clock, statistic)
                value = None if not per else value / per
            values[column] = value
        wall = values["wall"]
        rows.append(
            {
                "label": ratio.label,
                "scenario": ratio.scenario,
                "numerator": ratio.numerator,
                "denominator": ratio.denominator,
                "per": list(ratio.per) if ratio.per else None,
                "ratio": wall,
                "ratio_cpu_time": values["cpu"],
                "ratio_of_minimums": values["min"],
                "target": ratio.target,
                "met": None if ratio.ok is None or wall is None else ratio.ok(wall),
                "noisy": bool(scenario.get("noisy")),
            }
        )
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(meta: dict[str, Any], scenarios: dict[str, dict[str, Any]], ratios: list[dict[str, Any]]) -> str:
    lines = [
        "# Benchmark results: peft-core vs Hugging Face PEFT",
        "",
        "Written by `python -m benchmarks.run` (`nox -s bench`); the raw numbers are in `results.json`.",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in meta.items()]
    lines += [
        "",
        "## Ratios (measured in the same run; ratio of medians)",
        "",
        "Wall clock is the primary number; CPU time (process time of the single-threaded worker)",
        "is shown beside it because the machine is shared and CPU time ignores time spent descheduled.",
        "The ratio of the fastest runs is shown too: noise only ever adds time, so on a noisy",
        "machine it is the steadier estimate of what the code costs. Targets are checked on medians.",
        "NOISY: other processes used more than half a core on average while the scenario ran, or the",
        "load average exceeded the logical CPUs; rerun those on a quiet machine before trusting them.",
        "",
        "| measurement | ratio (wall) | ratio (CPU time) | ratio (fastest runs) | target | met | machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ratios:
        met = {None: "", True: "yes", False: "**no**"}[row["met"]]
        lines.append(
            f"| {row['label']} | {_fmt(row['ratio'])} | {_fmt(row['ratio_cpu_time'])} | "
            f"{_fmt(row['ratio_of_minimums'])} | {row['target']} | {met} | {'NOISY' if row.get('noisy') else ''} |"
        )
    lines += ["", "## Timings (ms: median, min, max over the runs; CPU-time median)", ""]
    for name, scenario in scenarios.items():
        lines += [f"### {name}", ""]
        if scenario.get("doc"):
            lines += [scenario["doc"], ""]
        lines += [f"- {note}" for note in scenario.get("notes", [])]
        loads = scenario.get("load_average")
        if loads:
            lines.append(f"- load average (1 min) before/after: {loads[0]:.2f} / {loads[1]:.2f}")
        if scenario.get("other_cpu_cores") is not None:
            lines.append(f"- CPU used by other processes meanwhile: {scenario['other_cpu_cores']:.2f} cores")
        if scenario.get("noisy"):
            lines.append("- **NOISY**: the machine was busy; its ratios are less reliable")
        lines.append("")
        if scenario.get("wall"):
            lines += ["| variant | median | min | max | runs | CPU median |", "|---|---|---|---|---|---|"]
            for variant, stats in scenario["wall"].items():
                cpu = scenario.get("cpu", {}).get(variant)
                lines.append(
                    f"| {variant} | {_fmt(stats['median_ms'], 1)} | {_fmt(stats['min_ms'], 1)} | "
                    f"{_fmt(stats['max_ms'], 1)} | {stats['runs']} | {_fmt(cpu['median_ms'] if cpu else None, 1)} |"
                )
            lines.append("")
        if scenario.get("values"):
            lines += ["| value | |", "|---|---|"]
            lines += [f"| {key} | {value:,.1f} |" for key, value in scenario["values"].items()]
            lines.append("")
    return "\n".join(lines)
