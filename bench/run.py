"""Benchmarks: securekeys against plain-bytes baselines, as ratios in one run.

Each comparison times ours and its baseline interleaved (round after round,
alternating), takes the median per-call time of each, and reports the ratio
ours / baseline.  Nothing here is asserted: goals are for the report.

    python bench/run.py            # writes bench/report.md
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import securekeys
from securekeys import create_key, read_key

HERE = Path(__file__).resolve().parent


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


def write_file(path: Path, size: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(size))
    os.close(fd)
    os.chmod(path, 0o400)
    return path


def plain_read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def key_rows(tmp: Path) -> list[Row]:
    small = write_file(tmp / "k32", 32)
    big = write_file(tmp / "k1m", 1 << 20)
    return [
        compare("create_key(32) + destroy()", lambda: create_key(32).destroy(),
                "os.urandom(32)", lambda: os.urandom(32), "<= 3x"),
        compare("read_key(p, 32) + destroy()", lambda: read_key(small, 32).destroy(),
                "open(p, 'rb').read()", lambda: plain_read(small), "<= 1.0x"),
        compare("read_key(p, 1 MiB) + destroy()", lambda: read_key(big, 1 << 20).destroy(),
                "open(p, 'rb').read()", lambda: plain_read(big), "<= 1.5x", number=50, rounds=9),
    ]


def crypto_rows() -> list[Row]:
    sys.path.insert(0, str(HERE))
    try:
        import bench_crypto
    except ImportError:
        return []
    return [Row(r["operation"], r["ours_us"], r["baseline"], r["baseline_us"], r["goal"])
            for r in bench_crypto.run()]


def table(rows: list[Row]) -> str:
    lines = ["| operation | ours (µs) | baseline | baseline (µs) | ratio | goal |",
             "|---|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.operation} | {r.ours_us:.2f} | {r.baseline} | {r.baseline_us:.2f} "
                     f"| {r.ratio:.2f}x | {r.goal} |")
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = key_rows(Path(tmp))
    rows += crypto_rows()
    text = table(rows)
    print(text)
    (HERE / "report.md").write_text(
        "# securekeys benchmarks\n\n"
        f"libsodium {securekeys.libsodium_version()}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs. Medians of interleaved rounds; ratio = ours / baseline "
        "(below 1 means faster than the baseline).\n\n" + text + "\n")


if __name__ == "__main__":
    main()
