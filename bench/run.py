"""Benchmarks: securekeys against plain-bytes baselines, as ratios in one run.

Each comparison times ours and its baseline interleaved (round after round,
alternating), takes the median per-call time of each, and reports the ratio
ours / baseline, with the operation's C floor (bench/floor.c) beside it.
Nothing here is asserted: goals are for the report.

    python bench/run.py    # writes bench/report.md and report.png, and the README's table
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

import securekeys
from securekeys import KeyRing, SecureBuffer, create_key, read_key
from securekeys._memory import _sodium_malloc_cycle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import Row, c_floors, compare, per_call_us, table, write_file  # noqa: E402


def plain_read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def key_rows(tmp: Path) -> list[Row]:
    import nacl.utils
    import pysodium  # type: ignore[import-untyped]

    small = write_file(tmp / "k32", 32)
    big = write_file(tmp / "k1m", 1 << 20)
    ring = KeyRing(32)
    return [
        compare("create_key(32) + destroy()", lambda: create_key(32).destroy(),
                "os.urandom(32)", lambda: os.urandom(32), "<= 6x", floor="create_key"),
        compare("create_key(32) + destroy()", lambda: create_key(32).destroy(),
                "pysodium.randombytes(32)", lambda: pysodium.randombytes(32), "-", floor="create_key"),
        compare("create_key(32) + destroy()", lambda: create_key(32).destroy(),
                "PyNaCl nacl.utils.random(32)", lambda: nacl.utils.random(32), "-", floor="create_key"),
        compare("KeyRing.create_key() + destroy()", lambda: ring.create_key().destroy(),
                "os.urandom(32)", lambda: os.urandom(32), "-", floor="ring_create_key"),
        compare("SecureBuffer(32) + destroy() (pool)", lambda: SecureBuffer(32).destroy(),
                "raw sodium_malloc + sodium_free", lambda: _sodium_malloc_cycle(32), "< 1x", floor="pool"),
        compare("read_key(p, 32) + destroy()", lambda: read_key(small, 32).destroy(),
                "open(p, 'rb').read()", lambda: plain_read(small), "<= 0.9x", floor="read_key"),
        compare("KeyRing.read_key(p) + destroy()", lambda: ring.read_key(small).destroy(),
                "open(p, 'rb').read()", lambda: plain_read(small), "-", floor="ring_read_key"),
        compare("read_key(p, 1 MiB) + destroy()", lambda: read_key(big, 1 << 20).destroy(),
                "open(p, 'rb').read()", lambda: plain_read(big), "<= 1.5x", floor="read_key_1m",
                number=50, rounds=9),
        live_keys_row(small, 10_000),
    ]


def read_cost_with_live_keys(path: Path, live: int, number: int = 2000) -> float:
    keys = [create_key(32) for _ in range(live)]
    try:
        return per_call_us(lambda: read_key(path, 32).destroy(), number)
    finally:
        del keys


def live_keys_row(path: Path, live: int, rounds: int = 9) -> Row:
    """read_key with `live` other keys alive against none, alternating per round."""
    with_live, without = [], []
    for _ in range(rounds):
        without.append(read_cost_with_live_keys(path, 0))
        with_live.append(read_cost_with_live_keys(path, live))
    return Row(f"read_key(p, 32) + destroy(), {live:,} live keys", statistics.median(with_live),
               "the same, no live keys", statistics.median(without), "<= 1.2x", floor="read_key_live")


def crypto_rows() -> list[Row]:
    import bench_crypto

    return bench_crypto.rows()


def plot(tmp: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [32, 256, 4096, 65536, 1 << 20]
    ours, plain = [], []
    for size in sizes:
        path = write_file(tmp / f"plot{size}", size)
        number = max(200, 2000 * 32 // size)
        row = compare(f"read_key {size}", lambda: read_key(path, size).destroy(),
                      "open().read()", lambda: plain_read(path), "", number=min(number, 2000), rounds=7)
        ours.append(row.ours_us)
        plain.append(row.baseline_us)
    counts = [0, 1000, 5000, 10_000, 20_000]
    small = tmp / "k32"
    live_cost = [statistics.median(read_cost_with_live_keys(small, n, 1000) for _ in range(5))
                 for n in counts]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.loglog(sizes, ours, "o-", label="read_key(p, n) + destroy()")
    left.loglog(sizes, plain, "s--", label="open(p, 'rb').read()")
    left.set_xlabel("key size (bytes)")
    left.set_ylabel("µs per call (median)")
    left.set_title("Cost vs key size")
    left.legend()
    right.plot(counts, live_cost, "o-", label="read_key(p, 32) + destroy()")
    right.set_xlabel("other live keys in the process")
    right.set_ylabel("µs per call (median)")
    right.set_ylim(bottom=0)
    right.set_title("Cost vs live-key count")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        floors = c_floors(Path(tmp))
        rows = key_rows(Path(tmp))
        rows += crypto_rows()
        plot(Path(tmp), HERE / "report.png")
        # The floors again, minutes later: each is the lower of the two, as a
        # floor timed while something else loaded the machine is no floor.
        again = c_floors(Path(tmp))
        floors = {name: min(us, again.get(name, us)) for name, us in floors.items()}
    text = table(rows, floors)
    print(text)
    (HERE / "report.md").write_text(
        "# securekeys benchmarks\n\n"
        f"libsodium {securekeys.libsodium_version()}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs. Medians of interleaved rounds; ratio = ours / baseline "
        "(below 1 means faster than the baseline). C floor: the same libsodium and system "
        "calls in C, no Python (bench/floor.c; the lower of a run before the rows and one "
        "after).\n\n" + text + "\n\n"
        "![cost vs key size and live-key count](report.png)\n")
    update_readme(text)


def update_readme(text: str) -> None:
    """Put the latest table between the README's bench-table markers."""
    readme = HERE.parent / "README.md"
    content = readme.read_text(encoding="utf-8")
    start, end = "<!-- bench-table -->\n", "\n<!-- /bench-table -->"
    if start in content and end in content:
        head, rest = content.split(start, 1)
        readme.write_text(head + start + text + end + rest.split(end, 1)[1], encoding="utf-8")


if __name__ == "__main__":
    main()
