"""What the kernel says about a secure buffer's pages, from /proc/self/smaps."""

from __future__ import annotations

from dataclasses import dataclass

from securekeys._memory import SecureBuffer

__all__ = ["PageReport", "page_report"]


@dataclass(frozen=True)
class PageReport:
    """The mapping that holds a secure buffer's data, as /proc/self/smaps shows it."""

    start: int
    end: int
    permissions: str          # e.g. "r--p": read, write, execute bits as the MMU enforces them
    locked_kb: int            # the "Locked:" field: resident pages pinned by mlock
    vm_flags: frozenset[str]  # "lo" = locked, "dd" = not in core dumps, "wf" = wiped on fork

    @property
    def readable(self) -> bool:
        return self.permissions[0] == "r"

    @property
    def writable(self) -> bool:
        return self.permissions[1] == "w"

    @property
    def mlocked(self) -> bool:
        return "lo" in self.vm_flags

    @property
    def dumpable(self) -> bool:
        return "dd" not in self.vm_flags


def page_report(buf: SecureBuffer) -> PageReport:
    """Find the mapping that holds `buf`'s data in /proc/self/smaps."""
    address = buf._data_address()
    with open("/proc/self/smaps", encoding="ascii") as smaps:
        lines = [line.rstrip("\n") for line in smaps]
    for i, line in enumerate(lines):
        fields = line.split()
        if not fields or "-" not in fields[0] or ":" in fields[0]:
            continue
        start_text, end_text = fields[0].split("-")
        start, end = int(start_text, 16), int(end_text, 16)
        if not start <= address < end:
            continue
        locked_kb = 0
        flags: frozenset[str] = frozenset()
        for detail in lines[i + 1:]:
            key, _, value = detail.partition(":")
            if key == "Locked":
                locked_kb = int(value.split()[0])
            elif key == "VmFlags":
                flags = frozenset(value.split())
                break
        return PageReport(start, end, fields[1], locked_kb, flags)
    raise LookupError(f"no mapping holds address {address:#x}")
