"""The guarded slot pool: reuse only after dealloc, canaries, bound, scale."""

from __future__ import annotations

import ctypes
import gc
import json
import signal

import pytest

import securekeys
from securekeys import SecureBuffer, create_key, report
from securekeys._memory import _set_pool_limit
from securekeys.diagnostics import page_report

from conftest import assert_dies, run_python


def mappings() -> int:
    with open("/proc/self/maps", encoding="ascii") as f:
        return sum(1 for _ in f)


def test_slot_reused_only_after_the_owner_is_gone() -> None:
    gc.collect()   # no garbage of earlier tests may return slots in between
    first = SecureBuffer(32)
    address = first._data_address()
    first.destroy()
    second = SecureBuffer(32)
    assert second._data_address() != address      # destroyed, but the object lives
    del first                                      # deallocated at once (refcount)
    third = SecureBuffer(32)
    assert third._data_address() == address        # deallocated: its slot comes back
    assert bytes(memoryview(third)) == bytes(32)   # wiped, zero-filled


def test_reused_slot_is_zero_filled_whatever_the_size() -> None:
    for size in (4000, 100, 4079, 1):
        buf = SecureBuffer(size)
        with buf.writing() as view:
            view[:] = b"\xff" * size
        del buf
        gc.collect()
    fresh = SecureBuffer(4079)
    assert bytes(memoryview(fresh)) == bytes(4079)


def test_stale_view_never_sees_a_new_key() -> None:
    # The view keeps its buffer object alive, so the slot cannot be reused:
    # touching the view dies instead of showing the next key's bytes.
    assert_dies("""
from securekeys import create_key
old = create_key(32)
view = memoryview(old)
old.destroy()
keys = [create_key(32) for _ in range(200)]
print(view[0])
print('REACHED')
""", signal.SIGSEGV)


def test_canary_corruption_is_fatal_on_release() -> None:
    assert_dies("""
import ctypes
from securekeys import SecureBuffer
buf = SecureBuffer(100)
ctypes.memset(buf._data_address() - 16, 0, 16)
buf.destroy()
print('REACHED')
""", signal.SIGABRT, "canary")


def test_data_still_ends_at_a_guard_page_for_every_size_class() -> None:
    for size in (1, 16, 4080, 4081, 8192, 65536, 1 << 20, (1 << 20) + 1, 3 << 20):
        buf = SecureBuffer(size)
        assert buf._data_address() + size == page_report(buf).end
        del buf


def test_pool_bound_holds() -> None:
    gc.collect()
    limit = 1 << 20
    old = _set_pool_limit(limit)   # trims what is wholly free
    try:
        before = report()["pool_bytes"]   # free slots of chunks still in use elsewhere
        buffers = [SecureBuffer(60_000) for _ in range(60)]   # 15-page slots, 4 per chunk
        grown = report()["mapped_bytes"]
        del buffers
        gc.collect()
        after = report()
        assert after["pool_bytes"] <= max(before, limit) + 4 * 15 * 4096
        assert after["mapped_bytes"] <= grown - 10 * 4 * 15 * 4096
    finally:
        _set_pool_limit(old)


def test_large_buffers_beyond_the_pool_are_unmapped() -> None:
    gc.collect()
    before = report()["mapped_bytes"]
    buf = SecureBuffer(5 << 20)
    assert report()["mapped_bytes"] > before
    del buf
    gc.collect()
    assert report()["mapped_bytes"] == before


def test_no_mapping_growth_over_a_million_cycles() -> None:
    gc.collect()
    before = mappings()
    mapped = report()["mapped_bytes"]
    for _ in range(1_000_000):
        create_key(32).destroy()
    gc.collect()
    assert mappings() <= before + 2
    assert report()["mapped_bytes"] == mapped


def test_thirty_thousand_live_keys() -> None:
    result = run_python("""
import json, securekeys
keys = [securekeys.create_key(32) for _ in range(30_000)]
facts = securekeys.report()
print(json.dumps({"live": facts["live_buffers"], "unlocked": facts["unlocked_buffers"],
                  "mappings": facts["mappings"], "max": facts["max_map_count"],
                  "locked": sum(k.locked for k in keys)}))
""", timeout=300)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["live"] == 30_000 and facts["unlocked"] == 0 and facts["locked"] == 30_000
    assert facts["mappings"] < facts["max"]


# -- free slots kept writable (a key's life costs two mprotect calls, not four) --------

def test_destroy_without_views_wipes_and_leaves_nothing_readable() -> None:
    key = create_key(32)
    address = key._data_address()
    key.destroy()
    assert ctypes.string_at(address - 16, 48) == bytes(48)   # canary and data
    del key
    gc.collect()
    assert ctypes.string_at(address - 16, 48) == bytes(48)


def test_a_new_buffer_is_zero_filled_even_after_a_stray_write_into_a_free_slot() -> None:
    gc.collect()
    limit = _set_pool_limit(1 << 30)          # the slot must stay mapped, in the pool
    try:
        old = SecureBuffer(32)
        address = old._data_address()
        del old                               # back to the pool, writable
        ctypes.memset(address - 16, 0x41, 48)  # a stray write (a C bug) into free memory
        new = SecureBuffer(32)
        assert new._data_address() == address  # the same slot came back
        assert bytes(memoryview(new)) == bytes(32)
        new.destroy()
    finally:
        _set_pool_limit(limit)


@pytest.mark.parametrize("holder", ["view", "borrow", "slice of a view"])
def test_anything_that_can_still_reach_a_destroyed_buffer_finds_it_inaccessible(holder: str) -> None:
    buf = SecureBuffer(32)
    if holder == "view":
        keep: object = memoryview(buf)
    elif holder == "borrow":
        keep = buf.reading()
        keep.__enter__()   # type: ignore[attr-defined]
    else:
        keep = memoryview(buf)[4:8]
    buf.destroy()
    assert page_report(buf).permissions.startswith("--")
    del keep


def test_export_count_follows_every_view() -> None:
    # Only a buffer that nothing can reach any more is left writable: the
    # count must drop back to zero when views go, or every destroy() after a
    # view would pay for PROT_NONE for nothing (and worse, never the reverse).
    buf = SecureBuffer(32)
    views = [memoryview(buf) for _ in range(3)]
    sliced = views[0][1:3]
    for view in views[1:]:
        view.release()
    del views
    assert page_report(buf).permissions.startswith("rw")
    sliced.release()
    buf.destroy()
    assert page_report(buf).permissions.startswith("rw")   # nothing could reach it


# -- large secrets: huge-page slots ------------------------------------------------------

def _thp_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _thp_available(), reason="no transparent huge pages on this kernel")
@pytest.mark.skipif(securekeys.get_backend() != "sodium", reason="secretmem has no huge pages")
def test_a_large_secret_lives_in_huge_pages_and_keeps_every_guarantee() -> None:
    # One page-table entry per mprotect instead of 257: the slot is a whole,
    # aligned huge page, still between guard pages, still locked and not dumped.
    size = 1 << 20
    buf = SecureBuffer(size)
    with buf.writing() as view:
        view[:] = b"\x5a" * size
    buf.readonly()
    report = page_report(buf)
    assert report.start % (2 << 20) == 0 and report.end - report.start == 2 << 20
    assert report.permissions.startswith("r-") and report.mlocked and not report.dumpable
    assert buf._data_address() + size == report.end          # data ends at the guard page
    with open("/proc/self/smaps", encoding="ascii") as smaps:
        text = smaps.read()
    entry = text[text.index(f"{report.start:x}-"):]
    huge_kb = int(entry.split("AnonHugePages:")[1].split()[0])
    assert huge_kb == 2048, entry[:600]
    view = memoryview(buf)
    buf.destroy()
    assert page_report(buf).permissions.startswith("--")     # a view could still reach it
    view.release()
