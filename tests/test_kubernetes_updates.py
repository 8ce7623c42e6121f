"""read_key(beneath=) while kubelet updates a secret volume.

An update writes a new ..TIMESTAMP directory, renames a new ..data link onto
the old one, then removes the old directory.  A lookup that read ..data's
old target just before the rename meets the old directory removed: ENOENT.
read_key looks again when the symbolic links on the path changed since its
last look, a bounded number of times, and a key that is really missing is
FileNotFoundError after at most two lookups.

The race is made deterministic two ways: on a FUSE volume
(tests/kubelet_fuse.py) whose lookup of the old directory performs the
update, so the kernel's own lookup meets it; and, on any machine, by an
openat2 that performs the update on disk and then fails as the kernel would.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import securekeys.lookup as lookup
from securekeys import KeyRing, read_key
from securekeys._memory import _openat2

SIZE = 32
HERE = Path(__file__).resolve().parent
OLD_STAMP = "..2024_05_01_12_00_00.123456789"
NEW_STAMP = "..2024_05_01_12_05_00.123456789"


def key_bytes(key: Any) -> bytes:
    with key.reading() as view:   # test code may copy; the library never does
        return bytes(view)


def make_file(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)


def volume(root: Path, content: bytes | None) -> Path:
    """AtomicWriter's layout, owned by this uid: key -> ..data/key -> OLD_STAMP/key."""
    mount = root / "volume"
    (mount / OLD_STAMP).mkdir(parents=True)
    if content is not None:
        make_file(mount / OLD_STAMP / "key", content)
    (mount / "..data").symlink_to(OLD_STAMP)
    (mount / "key").symlink_to("..data/key")
    return mount


def update(mount: Path, content: bytes, stamp: str = NEW_STAMP) -> None:
    """AtomicWriter's update: the new directory, ..data renamed onto it, the old one removed."""
    old = os.readlink(mount / "..data")
    (mount / stamp).mkdir()
    make_file(mount / stamp / "key", content)
    (mount / "..data_tmp").symlink_to(stamp)
    os.rename(mount / "..data_tmp", mount / "..data")
    shutil.rmtree(mount / old)


def lookups(monkeypatch: pytest.MonkeyPatch, before: Callable[[int], None] | None = None) -> list[int]:
    """Count read_key's openat2 lookups beneath a directory; `before(n)` runs
    just before the n-th (from 1), as the kernel's lookup would meet it."""
    real = _openat2
    count: list[int] = []

    def counted(dir_fd: int, path: Any, flags: int, resolve: int) -> int:
        if dir_fd != lookup._AT_FDCWD and not flags & os.O_DIRECTORY:   # not beneath= itself
            count.append(1)
            if before is not None:
                before(len(count))
        return real(dir_fd, path, flags, resolve)

    monkeypatch.setattr(lookup, "_openat2", counted)
    return count


# -- without FUSE: the lookup's failure made on disk ------------------------------

def test_a_lookup_that_meets_the_old_directory_removed_looks_again(private_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    mount = volume(private_dir, old)

    def kubelet_then_enoent(n: int) -> None:
        if n == 1:   # the lookup read ..data -> OLD_STAMP, then kubelet updated the volume
            update(mount, new)
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "key")

    count = lookups(monkeypatch, kubelet_then_enoent)
    key = read_key("key", SIZE, beneath=mount)
    assert key_bytes(key) == new and len(count) == 2


def test_a_key_missing_behind_links_is_missing_after_two_lookups(private_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    mount = volume(private_dir, None)
    count = lookups(monkeypatch)
    with pytest.raises(FileNotFoundError) as info:
        read_key("key", SIZE, beneath=mount)
    assert info.value.filename == str(mount / "key") and len(count) == 2


def test_a_key_missing_without_links_is_missing_after_one_lookup(private_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    count = lookups(monkeypatch)
    with pytest.raises(FileNotFoundError):
        read_key("missing", SIZE, beneath=private_dir)
    assert len(count) == 1


def test_updates_that_never_end_fail_after_a_bounded_number_of_lookups(private_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    mount = volume(private_dir, os.urandom(SIZE))

    def always(n: int) -> None:
        update(mount, os.urandom(SIZE), f"..2024_05_01_13_00_{n:02d}.123456789")
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "key")

    count = lookups(monkeypatch, always)
    with pytest.raises(OSError) as info:
        read_key("key", SIZE, beneath=mount)
    assert info.value.errno == errno.EAGAIN and "kept changing" in str(info.value)
    assert len(count) == lookup._BENEATH_TRIES


# -- over FUSE: the kernel's own lookup meets the update ---------------------------

def _fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse: the kernel has no FUSE"
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        return "mounting FUSE needs root or fusermount3 (Debian: apt-get install fuse3)"
    try:
        import mfusepy  # type: ignore[import-untyped]  # noqa: F401
    except (ImportError, OSError) as e:   # OSError: mfusepy without libfuse3 (scripts/prerequisites.sh)
        return f"no FUSE binding or libfuse3 ({e}): pip install mfusepy; apt-get install fuse3"
    return None


def _unmount(mountpoint: Path) -> None:
    if shutil.which("fusermount3") is not None:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True, timeout=60)
        return
    if ctypes.CDLL(None, use_errno=True).umount2(os.fsencode(mountpoint), 0) != 0:
        raise OSError(ctypes.get_errno(), "umount2", str(mountpoint))


@contextmanager
def fuse_volume(root: Path, mode: str, old: bytes, new: bytes) -> Iterator[tuple[Path, list[str]]]:
    """The FUSE volume mounted at root/volume; yields it and, once it is
    unmounted, what the server said (one "update" per update)."""
    reason = _fuse_unavailable()
    if reason is not None:
        pytest.skip(reason)
    mountpoint = root / "volume"
    mountpoint.mkdir()
    server = subprocess.Popen([sys.executable, str(HERE / "kubelet_fuse.py"), str(mountpoint), mode,
                               old.hex(), new.hex()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    try:
        assert server.stdout is not None
        first = server.stdout.readline()   # "ready" once the kernel has sent FUSE_INIT
        if first != "ready\n":
            _, errors = server.communicate(timeout=60)
            pytest.fail(f"the FUSE server did not start: {first!r} {errors}")
        try:
            yield mountpoint, said
        finally:
            _unmount(mountpoint)
            out, errors = server.communicate(timeout=60)
            assert server.returncode == 0, errors
            said += out.split()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


READERS: dict[str, Callable[[Path], bytes]] = {
    "read_key": lambda mount: key_bytes(read_key("key", SIZE, beneath=mount)),
    "KeyRing.read_key": lambda mount: key_bytes(KeyRing(SIZE).read_key("key", beneath=mount)),
    "read_key root-managed": lambda mount: key_bytes(read_key("key", SIZE, beneath=mount, trust="root-managed")),
}


@pytest.mark.parametrize("reader", READERS)
def test_an_update_inside_the_kernels_lookup_reads_the_new_key(private_dir: Path, reader: str) -> None:
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    with fuse_volume(private_dir, "once", old, new) as (mount, said):
        assert READERS[reader](mount) == new
    assert said == ["update"]   # the lookup did meet the update


def test_the_cli_checks_a_key_updated_inside_the_lookup(private_dir: Path) -> None:
    with fuse_volume(private_dir, "once", os.urandom(SIZE), os.urandom(SIZE)) as (mount, said):
        result = subprocess.run([sys.executable, "-m", "securekeys", "check", "key", "--size", str(SIZE),
                                 "--beneath", str(mount)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert said == ["update"]


def test_a_key_missing_from_the_volume_is_missing_over_fuse(private_dir: Path) -> None:
    with fuse_volume(private_dir, "missing", b"", b"") as (mount, said):
        with pytest.raises(FileNotFoundError) as info:
            read_key("key", SIZE, beneath=mount)
        assert info.value.filename == str(mount / "key")
    assert said == []


def test_a_volume_that_never_stops_updating_fails_over_fuse(private_dir: Path) -> None:
    with fuse_volume(private_dir, "churn", os.urandom(SIZE), os.urandom(SIZE)) as (mount, said):
        with pytest.raises(OSError) as info:
            read_key("key", SIZE, beneath=mount)
        assert info.value.errno == errno.EAGAIN and "kept changing" in str(info.value)
    # Each try is one lookup and one look at the links, each meeting one update.
    assert 0 < len(said) <= 2 * lookup._BENEATH_TRIES
