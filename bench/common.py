"""What every benchmark here shares: interleaved timing, the row, the table.

A comparison times ours and its baseline alternately, round after round, and
takes the median per-call time of each, so that drift in CPU frequency or load
hits both alike.  ratio = ours / baseline: below 1 means faster.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    operation: str
    ours_us: float
    baseline: str
    baseline_us: float
    goal: str

    @property
    def ratio(self) -> float:
        return self.ours_us / self.baseline_us


def per_call_us(stmt: Callable[[], object], number: int) -> float:
    return timeit.timeit(stmt, number=number) / number * 1e6


def compare(operation: str, ours: Callable[[], object], baseline_name: str,
            baseline: Callable[[], object], goal: str, *, number: int = 2000, rounds: int = 15) -> Row:
    """Interleave ours and the baseline for `rounds` rounds; medians of each."""
    ours(), baseline()   # warm up
    ours_times, base_times = [], []
    for _ in range(rounds):
        ours_times.append(per_call_us(ours, number))
        base_times.append(per_call_us(baseline, number))
    return Row(operation, statistics.median(ours_times), baseline_name,
               statistics.median(base_times), goal)


def table(rows: list[Row]) -> str:
    lines = ["| operation | ours (µs) | baseline | baseline (µs) | ratio | goal |",
             "|---|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.operation} | {r.ours_us:.2f} | {r.baseline} | {r.baseline_us:.2f} "
                     f"| {r.ratio:.2f}x | {r.goal} |")
    return "\n".join(lines)
