"""A socket, FIFO, terminal or device where a key should be: refused by the
rule it breaks under every option, and never opened (O_PATH first).

Whether a file was opened is seen by inotify: every successful open(2) of
an inode queues IN_OPEN on it (an O_PATH lookup queues nothing), so the
events read after a refusal say exactly whether anything opened it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from securekeys import KeyFileError, KeyRing, create_key, read_key
from securekeys.trust import ENCODINGS, TRUST_POLICIES

SIZE = 32
_IN_OPEN = 0x20
_IN_EVENT = struct.Struct("iIII")   # struct inotify_event: wd, mask, cookie, len (then the name)
_libc = ctypes.CDLL(None, use_errno=True)


class OpenWatch:
    """inotify IN_OPEN on a set of paths (the inodes they name now)."""

    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.names: dict[int, str] = {}

    def add(self, path: Path) -> None:
        # IN_DONT_FOLLOW: the node itself; its inode is watched, wherever it is opened from.
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), _IN_OPEN | 0x02000000)
        if wd < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch", str(path))
        self.names[wd] = path.name

    def opened(self) -> list[str]:
        """The names opened since the last call (events are queued by the
        open itself: nothing to wait for)."""
        seen: list[str] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return seen
            offset = 0
            while offset < len(data):
                wd, mask, _, length = _IN_EVENT.unpack_from(data, offset)
                offset += _IN_EVENT.size + length
                if mask & _IN_OPEN:
                    seen.append(self.names[wd])

    def close(self) -> None:
        os.close(self.fd)


def _free_char_major() -> int | None:
    """A character-device major number no driver has registered (the
    'local/experimental' range first): opening its node fails with ENXIO."""
    with open("/proc/devices", encoding="ascii") as f:
        lines = f.read().split("\n\n")[0].splitlines()[1:]
    taken = {int(line.split()[0]) for line in lines if line.strip()}
    return next((major for major in range(254, 233, -1) if major not in taken), None)


@pytest.fixture
def specials(private_dir: Path) -> Iterator[dict[str, Path]]:
    """Every kind of non-regular file that can stand where a key should,
    each with the word its refusal must use."""
    made: dict[str, Path] = {}
    os.mkfifo(private_dir / "fifo", 0o600)
    made["a FIFO"] = private_dir / "fifo"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.fspath(private_dir / "sock"))   # open(2) of a socket: ENXIO
    os.chmod(private_dir / "sock", 0o600)
    made["a socket"] = private_dir / "sock"
    master, slave = os.openpty()
    try:
        # A terminal that opens: the pty's own node (a copy outside devpts
        # fails with EIO), read with beneath="/dev/pts" as well.
        made["a character device (pty)"] = Path(os.ttyname(slave))
        if os.geteuid() == 0:
            major = _free_char_major()
            assert major is not None, "every character major from 234 to 254 is taken"
            for name, rdev in (("nodriver", os.makedev(major, 0)),   # open(2): ENXIO
                               ("tty", os.makedev(5, 0)),            # /dev/tty: ENXIO without a terminal
                               ("null", os.makedev(1, 3))):          # a device that opens
                os.mknod(private_dir / name, stat.S_IFCHR | 0o600, rdev)
                made[f"a character device ({name})"] = private_dir / name
        yield made
    finally:
        os.close(master)
        os.close(slave)
        server.close()


def _word(kind: str) -> str:
    return kind.split(" (")[0]


def _reads(path: Path) -> Iterator[tuple[str, Any]]:
    """read_key under every trust policy, with and without beneath=, in
    every encoding and encrypted; KeyRing.read_key too."""
    kek = create_key(32)
    for trust in TRUST_POLICIES:
        for beneath in (None, path.parent):
            where: Any = path if beneath is None else path.name
            for encoding in ENCODINGS:
                yield (f"{trust} {encoding} beneath={beneath}",
                       lambda: read_key(where, SIZE, trust=trust, encoding=encoding, beneath=beneath))
            yield (f"{trust} kek beneath={beneath}", lambda: read_key(where, SIZE, trust=trust, beneath=beneath, kek=kek))
            ring = KeyRing(SIZE)
            yield (f"{trust} ring beneath={beneath}",
                   lambda: ring.read_key(where, trust=trust, beneath=beneath))


def test_every_special_file_is_refused_by_its_rule_and_never_opened(specials: dict[str, Path]) -> None:
    watch = OpenWatch()
    try:
        for path in specials.values():
            watch.add(path)
        assert watch.opened() == []
        for kind, path in specials.items():
            for name, read in _reads(path):
                with pytest.raises(KeyFileError) as info:
                    read()
                assert info.value.errno == errno.EINVAL, (kind, name, info.value)
                assert info.value.strerror == f"refusing {_word(kind)}: a key must be a regular file", (kind, name)
                assert info.value.filename == str(path), (kind, name)
                # Read after each refusal: inotify merges repeated events.
                assert watch.opened() == [], (kind, name, "opened before it was checked")
    finally:
        watch.close()


def test_the_watch_sees_an_open(private_dir: Path, specials: dict[str, Path]) -> None:
    # The test above proves nothing unless inotify reports these opens.
    watch = OpenWatch()
    try:
        for kind, path in specials.items():
            watch.add(path)
            if kind in ("a FIFO", "a character device (null)", "a character device (pty)"):
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
                assert watch.opened() == [path.name], kind
            elif kind in ("a socket", "a character device (nodriver)"):   # no open(2) succeeds
                with pytest.raises(OSError) as info:
                    os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
                assert info.value.errno == errno.ENXIO, kind
        key = private_dir / "key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        os.write(fd, os.urandom(SIZE))
        os.close(fd)
        watch.add(key)
        # A key file is opened once per read, for reading (one look at a
        # time: inotify merges an event with the same one still unread).
        read_key(key, SIZE).destroy()
        assert watch.opened() == ["key"]
        read_key("key", SIZE, beneath=private_dir, trust="root-managed").destroy()
        assert watch.opened() == ["key"]
    finally:
        watch.close()


def test_devices_need_root(specials: dict[str, Path]) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod of a character device needs CAP_MKNOD (root)")
    assert {kind for kind in specials if "device" in kind} == {
        "a character device (nodriver)", "a character device (tty)", "a character device (pty)",
        "a character device (null)"}, "the devices made as root are all in the tests"


def test_the_cli_names_the_rule_for_a_socket(private_dir: Path, specials: dict[str, Path]) -> None:
    for args in (["check", str(specials["a socket"]), "--size", "32"],
                 ["check", "sock", "--size", "32", "--beneath", str(private_dir)]):
        result = subprocess.run([sys.executable, "-m", "securekeys", *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1, result
        assert "refusing a socket: a key must be a regular file" in result.stderr, result.stderr
