"""What every benchmark here shares: interleaved timing, the row, the C
floors, the table.

A comparison times ours and its baseline alternately, round after round, and
takes the median per-call time of each, so that drift in CPU frequency or load
hits both alike.  ratio = ours / baseline: below 1 means faster.  Beside each
row, its C floor: the same libsodium and system calls timed in C by
bench/floor.c, so that a reader sees what the Python layer costs on top.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    operation: str
    ours_us: float
    baseline: str
    baseline_us: float
    goal: str
    floor: str = ""          # the name of this operation's floor in bench/floor.c

    @property
    def ratio(self) -> float:
        return self.ours_us / self.baseline_us


def per_call_us(stmt: Callable[[], object], number: int) -> float:
    return timeit.timeit(stmt, number=number) / number * 1e6


def compare(operation: str, ours: Callable[[], object], baseline_name: str,
            baseline: Callable[[], object], goal: str, *, floor: str = "", number: int = 2000,
            rounds: int = 15) -> Row:
    """Interleave ours and the baseline for `rounds` rounds; medians of each."""
    ours(), baseline()   # warm up
    ours_times, base_times = [], []
    for _ in range(rounds):
        ours_times.append(per_call_us(ours, number))
        base_times.append(per_call_us(baseline, number))
    return Row(operation, statistics.median(ours_times), baseline_name,
               statistics.median(base_times), goal, floor)


def write_file(path: Path, size: int) -> Path:
    """A key file of `size` random bytes, mode 0400, as read_key wants it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(size))
    os.close(fd)
    os.chmod(path, 0o400)
    return path


def c_floors(tmp: Path) -> dict[str, float]:
    """bench/floor.c compiled and run in `tmp`: each floor's median (µs) by
    name.  Where it cannot be built (no C compiler, no libsodium headers) or
    fails, a note on stderr, and the floors it printed (perhaps none): the
    table shows "-" for the others."""
    work = Path(tempfile.mkdtemp(prefix="floor", dir=tmp))
    write_file(work / "k32", 32)
    write_file(work / "k1m", 1 << 20)
    binary = work / "floor"
    compiled = subprocess.run(["cc", "-O2", str(HERE / "floor.c"), "-o", str(binary), "-lsodium"],
                              capture_output=True, text=True)
    if compiled.returncode != 0:
        print(f"bench/floor.c did not build, no C floors:\n{compiled.stderr}", file=sys.stderr)
        return {}
    ran = subprocess.run([str(binary), str(work)], capture_output=True, text=True)
    if ran.returncode != 0:
        print(f"bench/floor.c failed, no C floors:\n{ran.stderr}", file=sys.stderr)
    return {name: float(us) for name, us in re.findall(r"^floor (\w+): ([0-9.]+) us$", ran.stdout, re.MULTILINE)}


def table(rows: list[Row], floors: dict[str, float]) -> str:
    """The Markdown table; a row's C floor is "-" when it has none."""
    lines = ["| operation | ours (µs) | C floor (µs) | baseline | baseline (µs) | ratio | goal |",
             "|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        floor = f"{floors[r.floor]:.2f}" if r.floor in floors else "-"
        lines.append(f"| {r.operation} | {r.ours_us:.2f} | {floor} | {r.baseline} | {r.baseline_us:.2f} "
                     f"| {r.ratio:.2f}x | {r.goal} |")
    return "\n".join(lines)
