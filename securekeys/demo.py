"""`make demo`: create a key, show its protection as the kernel sees it, destroy it."""

from __future__ import annotations

import securekeys
from securekeys.diagnostics import PageReport, page_report


def describe(report: PageReport) -> str:
    access = ("read" if report.readable else "no read") + ", " + ("write" if report.writable else "no write")
    return (f"pages {report.start:#x}-{report.end:#x} perms {report.permissions} ({access}); "
            f"{'locked (never swapped)' if report.mlocked else 'NOT locked'}, "
            f"{'excluded from core dumps' if not report.dumpable else 'DUMPABLE'}, "
            f"{'wiped in forked children' if 'wf' in report.vm_flags else 'inherited by children'}; "
            f"Locked: {report.locked_kb} kB")


def main() -> None:
    print(f"securekeys {securekeys.__version__} on libsodium {securekeys.libsodium_version()}")
    key = securekeys.create_key(32)
    print(f"created   {key!r}")
    report = page_report(key)
    print(f"  smaps:  {describe(report)}")
    end = key._data_address() + key.size
    guarded = "the next page is a guard page" if end == report.end else "NOT at a guard page"
    print(f"  layout: the key's last byte is at {end - 1:#x}, the mapping ends at "
          f"{report.end:#x}: {guarded}")
    key.noaccess()
    print(f"noaccess  {key!r}")
    print(f"  smaps:  {describe(page_report(key))}")
    with key.reading() as view:
        print(f"borrowed  {key!r} for reading {len(view)} bytes")
        print(f"  smaps:  {describe(page_report(key))}")
    print(f"returned  {key!r}")
    securekeys.destroy_key(key)
    print(f"destroyed {key!r}")
    print(f"  smaps:  {describe(page_report(key))}")
    print("  (wiped: no view or borrow can reach it, so its slot stays writable, holding zeros,\n"
          "   ready for the next key; a slot a stale view could reach would be ---p instead)")


if __name__ == "__main__":
    main()
