"""KeyRing: many small keys packed into shared guarded, locked pages."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import threading
from pathlib import Path

import pytest

from securekeys import KeyFileError, KeyRing, Protection, SecureKey, create_key, destroy_key, report, write_key
from securekeys.diagnostics import page_report

from conftest import assert_dies


def key_bytes(key: SecureKey) -> bytes:
    with key.reading() as view:
        return bytes(view)


def mappings() -> int:
    with open("/proc/self/maps", encoding="ascii") as f:
        return sum(1 for _ in f)


def test_ring_keys_are_ordinary_secure_keys() -> None:
    ring = KeyRing(32)
    assert ring.key_size == 32 and len(ring) == 0
    key = ring.create_key()
    assert isinstance(key, SecureKey) and len(key) == 32
    assert key.state is Protection.READONLY and key.locked
    assert len(ring) == 1 and repr(ring) == "<KeyRing key_size=32 keys=1>"
    key.noaccess()
    with key.reading() as view:
        assert len(bytes(view)) == 32
    assert key.state is Protection.NOACCESS
    other = ring.create_key()
    assert key != other and key == key
    destroy_key(key)
    assert key.destroyed and len(ring) == 1


@pytest.mark.parametrize("size, error", [(0, ValueError), (4081, ValueError), (True, TypeError), (1.5, TypeError)])
def test_bad_key_sizes(size: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        KeyRing(size)  # type: ignore[arg-type]


def test_page_protection_is_shared_by_page_mates() -> None:
    ring = KeyRing(32)
    a, b = ring.create_key(), ring.create_key()
    assert page_report(a).start == page_report(b).start   # same page
    a.noaccess()
    assert page_report(a).readable          # b still wants READONLY
    b.noaccess()
    assert not page_report(a).readable      # now the whole page is NOACCESS
    with a.reading():
        assert page_report(b).readable      # borrowing a makes b readable: the trade-off
    assert not page_report(b).readable


def test_neighbours_intact_after_one_key_is_destroyed() -> None:
    ring = KeyRing(48)
    keys = [ring.create_key() for _ in range(200)]
    contents = [key_bytes(k) for k in keys]
    for i in range(0, 200, 3):
        keys[i].destroy()
    for i, key in enumerate(keys):
        if i % 3:
            assert key_bytes(key) == contents[i]
        else:
            assert key.destroyed
    assert len(ring) == 200 - len(range(0, 200, 3))


def test_destroyed_slot_is_wiped_at_once() -> None:
    ring = KeyRing(32)
    keep = ring.create_key()
    gone = ring.create_key()
    address = gone._data_address()
    gone.destroy()
    with keep.reading():   # the shared page is readable while keep is borrowed
        assert ctypes.string_at(address - 16, 48) == bytes(48)   # canary and key


def test_slots_are_reused_only_after_dealloc() -> None:
    ring = KeyRing(32)
    first = ring.create_key()
    address = first._data_address()
    first.destroy()
    second = ring.create_key()
    assert second._data_address() != address   # first still exists: its slot is not reused
    del first
    gc.collect()
    third = ring.create_key()
    assert third._data_address() == address


def test_ring_read_key(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    ring = KeyRing(32)
    key = ring.create_key()
    write_key(tmp_path / "k", key)
    loaded = ring.read_key(tmp_path / "k")
    assert loaded == key and loaded.state is Protection.READONLY
    with pytest.raises(KeyFileError):
        KeyRing(16).read_key(tmp_path / "k")   # 32 bytes on disk, 16 expected
    live = len(ring)
    with pytest.raises(FileNotFoundError):
        ring.read_key(tmp_path / "missing")
    assert len(ring) == live                  # the failed read left no key behind


def test_ring_destroy_destroys_every_key() -> None:
    ring = KeyRing(16)
    keys = [ring.create_key() for _ in range(50)]
    neighbour_ring_key = KeyRing(16).create_key()
    outsider = create_key(16)
    ring.destroy()
    assert all(k.destroyed for k in keys) and len(ring) == 0
    with pytest.raises(ValueError, match="destroyed"):
        ring.create_key()
    assert not outsider.destroyed and not neighbour_ring_key.destroyed


def test_hundred_thousand_keys() -> None:
    gc.collect()
    maps_before = mappings()
    locked_before = report()["locked_bytes"]
    mapped_start = report()["mapped_bytes"]
    ring = KeyRing(32)
    keys = [ring.create_key() for _ in range(100_000)]
    assert len(ring) == 100_000
    assert all(k.locked for k in keys)
    assert mappings() - maps_before < 200                 # not 4 per key
    locked = report()["locked_bytes"] - locked_before
    assert locked < 100_000 * 4096 // 50                 # far less than a page per key
    sample = keys[::997]
    contents = [key_bytes(k) for k in sample]
    assert len(set(contents)) == len(sample)
    for k in keys:
        k.noaccess()
    assert [key_bytes(k) for k in sample] == contents
    ring.destroy()
    assert all(k.destroyed for k in keys)
    mapped_before = report()["mapped_bytes"]
    del keys, sample, ring, k
    gc.collect()
    assert report()["mapped_bytes"] == mapped_start   # the ring's runs were unmapped


def test_threads_share_a_ring() -> None:
    ring = KeyRing(32)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(500):
                k = ring.create_key()
                k.noaccess()
                with k.reading() as v:
                    assert len(bytes(v)) == 32
                k.destroy()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ring) == 0


def test_overflow_into_the_neighbours_canary_is_detected() -> None:
    stderr = assert_dies("""
import ctypes
from securekeys import KeyRing
ring = KeyRing(32)
c, d = ring._new_key(), ring._new_key()     # empty keys, still READWRITE
first, second = sorted([c, d], key=lambda k: k._data_address())
ctypes.memset(first._data_address() + 32, 0x41, 1)   # one byte past the end
second.destroy()
print('REACHED')
""", signal.SIGABRT, "canary")
    assert b"KeyRing" in stderr


def test_misuse_of_ring_keys_is_fatal() -> None:
    assert_dies("""
from securekeys import KeyRing
key = KeyRing(32).create_key()
key.destroy()
memoryview(key)
print('REACHED')
""", signal.SIGABRT, "destroyed")


@pytest.mark.parametrize("size", [32, 1000])
@pytest.mark.parametrize("when", ["collector", "exit"])
def test_ring_key_in_a_reference_cycle_outlives_nothing_it_needs(size: int, when: str) -> None:
    # The collector clears a cycle in an order of its choosing: it must never
    # take the ring (and its pages) away from a key that is still to be wiped.
    # 1000-byte keys share no page, so the page is NOACCESS when the key goes.
    from conftest import run_python
    result = run_python(f"""
import gc
import securekeys
from securekeys._memory import live_buffers
ring = securekeys.KeyRing({size})
holder = {{"key": ring.create_key()}}
holder["self"] = holder
holder["key"].noaccess()
other = create = ring.create_key()
other_ring = securekeys.KeyRing({size})
pair = [other_ring.create_key()]
pair.append(pair)
del ring, holder, other, create, other_ring, pair
if {when == "collector"!r}:
    gc.collect()
    print("LIVE", live_buffers())
""")
    assert result.returncode == 0, result
    assert result.stderr == b"", result
    if when == "collector":
        assert result.stdout == b"LIVE 0\n", result
