"""What protection this process really has, and process-wide hardening."""

from __future__ import annotations

import resource
from typing import Any

from securekeys._memory import _allocator_stats, _get_dumpable, _set_dumpable, libsodium_version

__all__ = ["harden", "report"]


def _limit(value: int) -> int | None:
    """An rlimit value, with None for unlimited."""
    return None if value == resource.RLIM_INFINITY else value


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.readline().strip()
    except OSError:
        return None


def _count_lines(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


def _swap_total_kb() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def report() -> dict[str, Any]:
    """What protection keys in this process really have.

    Keys: libsodium_version, backend, lock_policy, rlimit_memlock (soft, hard;
    None = unlimited), locked_bytes (memory securekeys has mlocked),
    live_buffers, unlocked_buffers (live buffers that could not be locked),
    max_map_count, mappings (in use by the process), core_limit (soft, hard),
    dumpable, swap_total_kb, and the pool's pool_bytes / pool_limit /
    mapped_bytes / chunks.
    """
    stats = _allocator_stats()
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    core = resource.getrlimit(resource.RLIMIT_CORE)
    max_map_count = _read_first_line("/proc/sys/vm/max_map_count")
    return {
        "libsodium_version": libsodium_version(),
        "backend": stats["backend"],
        "lock_policy": stats["lock_policy"],
        "rlimit_memlock": (_limit(memlock[0]), _limit(memlock[1])),
        "locked_bytes": stats["locked_bytes"],
        "live_buffers": stats["live_buffers"],
        "unlocked_buffers": stats["unlocked_buffers"],
        "max_map_count": int(max_map_count) if max_map_count else None,
        "mappings": _count_lines("/proc/self/maps"),
        "core_limit": (_limit(core[0]), _limit(core[1])),
        "dumpable": _get_dumpable(),
        "swap_total_kb": _swap_total_kb(),
        "pool_bytes": stats["pool_bytes"],
        "pool_limit": stats["pool_limit"],
        "mapped_bytes": stats["mapped_bytes"],
        "chunks": stats["chunks"],
    }


def harden() -> dict[str, Any]:
    """Keep secrets out of core dumps and away from debuggers of other users:
    RLIMIT_CORE set to 0 (soft and hard) and PR_SET_DUMPABLE 0.  Returns what
    was applied.  Irreversible for an unprivileged process, by design."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _set_dumpable(False)
    return {"core_limit": (0, 0), "dumpable": _get_dumpable()}
