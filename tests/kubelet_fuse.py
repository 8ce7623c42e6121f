"""A Kubernetes secret volume served over FUSE, updated inside a lookup.

    python kubelet_fuse.py MOUNTPOINT MODE OLD_HEX NEW_HEX

The volume is laid out as kubelet's AtomicWriter lays it out: `key ->
..data/key`, `..data -> ..TIMESTAMP`, `..TIMESTAMP/key`.  Because every
lookup is a request to this process (entry and attribute timeouts are 0,
symbolic links are not cached), the update can happen at the worst moment
for a reader: when the kernel, having read ..data's old target, looks the
old ..TIMESTAMP directory up.  That lookup renames a new ..data in, removes
the old directory and answers ENOENT, exactly what a reader meets when
kubelet's rename and removal fall between two steps of its lookup.

MODE: "once"    the first lookup of the first directory updates the volume;
      "churn"   every lookup of the current directory updates it (an update
                that never ends);
      "missing" the directory holds no key, and nothing changes.

Prints "ready" once mounted and "update" for each update, on stdout.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Any

import mfusepy as fuse  # type: ignore[import-untyped]


def stamp(generation: int) -> str:
    return f"..2024_05_01_12_00_{generation:02d}.123456789"


class Volume(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, mode: str, old: bytes, new: bytes) -> None:
        self.mode = mode
        self.new = new
        self.generation = 1
        self.data = stamp(1)   # where ..data points
        self.dirs: dict[str, dict[str, bytes]] = {self.data: {} if mode == "missing" else {"key": old}}
        self.handles: dict[int, bytes] = {}

    def init(self, path: str) -> None:
        print("ready", flush=True)

    def _update(self) -> None:
        """AtomicWriter: the new directory, ..data renamed onto it, the old one removed."""
        old = self.data
        self.generation += 1
        self.data = stamp(self.generation)
        self.dirs[self.data] = {"key": self.new}
        del self.dirs[old]
        print("update", flush=True)

    def _attrs(self, mode: int, size: int, nlink: int = 1) -> dict[str, Any]:
        return {"st_mode": mode, "st_nlink": nlink, "st_size": size, "st_uid": os.geteuid(),
                "st_gid": os.getegid(), "st_atime": 0, "st_mtime": 0, "st_ctime": 0}

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        parts = [part for part in path.split("/") if part]
        if not parts:
            return self._attrs(stat.S_IFDIR | 0o755, 0, 2)
        name = parts[0]
        if len(parts) == 1 and name in ("key", "..data"):
            return self._attrs(stat.S_IFLNK | 0o777, len(self._link(name)))
        if name not in self.dirs:
            raise fuse.FuseOSError(errno.ENOENT)
        if len(parts) == 1:
            if name == self.data and (self.mode == "churn" or (self.mode == "once" and self.generation == 1)):
                # The reader read ..data -> this directory; kubelet now
                # renames the new ..data in and removes this one.
                self._update()
                raise fuse.FuseOSError(errno.ENOENT)
            return self._attrs(stat.S_IFDIR | 0o755, 0, 2)
        if len(parts) == 2 and parts[1] in self.dirs[name]:
            return self._attrs(stat.S_IFREG | 0o400, len(self.dirs[name][parts[1]]))
        raise fuse.FuseOSError(errno.ENOENT)

    def _link(self, name: str) -> str:
        return "..data/key" if name == "key" else self.data

    def readlink(self, path: str) -> str:
        return self._link(path.strip("/"))

    def readdir(self, path: str, fh: int) -> list[str]:
        if path == "/":
            return [".", "..", "key", "..data", *self.dirs]
        return [".", "..", *self.dirs.get(path.strip("/"), {})]

    def open(self, path: str, flags: int) -> int:
        directory, name = path.strip("/").split("/")
        handle = len(self.handles) + 1
        self.handles[handle] = self.dirs[directory][name]   # the contents as opened
        return handle

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.handles[fh][offset:offset + size]

    def release(self, path: str, fh: int) -> int:
        del self.handles[fh]
        return 0


def main() -> None:
    mountpoint, mode, old, new = sys.argv[1:]
    # Every lookup reaches this process: nothing cached, so the update falls
    # inside the very lookup it is meant to race.  One thread: one order.
    fuse.FUSE(Volume(mode, bytes.fromhex(old), bytes.fromhex(new)), mountpoint, foreground=True,
              nothreads=True, entry_timeout=0, attr_timeout=0, negative_timeout=0)


if __name__ == "__main__":
    main()
