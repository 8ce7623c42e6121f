"""Writing key files: a new file, mode 0400, complete or not at all.

write_key (re-exported by securekeys.files and securekeys) writes the bytes
from guarded memory into an unnamed file (O_TMPFILE) linked into place, or
an encrypted key file (securekeys.encrypted) whose bytes are public.  No
`bytes` ever holds key bytes here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat

from securekeys._memory import SecureBuffer, _encode_text, _unlink_if_same, _write_from
from securekeys.crypto import MEMLIMIT_MODERATE, OPSLIMIT_MODERATE
from securekeys.encrypted import PASSPHRASE, check_secret, encrypt_key
from securekeys.errors import KeyDestroyedError
from securekeys.trust import Encoding, check_options

__all__ = ["write_key"]

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

# Read permission is what fsync of a directory needs: O_PATH cannot fsync, and
# O_WRONLY is refused for directories.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# An unnamed file, linked into place when complete (no O_EXCL: that forbids the link).
_UNNAMED_FLAGS = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_EXTRA = len(b"..") + 16 + len(b".tmp")   # ".NAME.<16 hex>.tmp" around the name
_KEY_MODE = 0o400
# A leftover temporary file is opened to be judged, never followed or waited on.
_LEFTOVER_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_AT_FDCWD = -100   # "relative to the working directory"


def write_key(path: StrOrBytesPath, key: SecureBuffer, *, encoding: Encoding = "raw",
              passphrase: SecureBuffer | None = None, kek: SecureBuffer | None = None,
              opslimit: int | None = None, memlimit: int | None = None) -> None:
    """Write `key` to a new file at `path` with mode 0400, atomically.

    Never replaces anything: an existing path (even a dangling symlink) raises
    FileExistsError.  The bytes go from guarded memory into an unnamed file
    in the same directory (O_TMPFILE; where the filesystem lacks it, a
    temporary `.NAME.<random>.tmp`), which is fsynced and then linked into
    place; the directory is fsynced too, so it must be readable as well as
    writable.  When write_key raises, nothing is left: no key under `path`,
    no temporary file; the error names `path`.  A NOACCESS key is borrowed
    for the write and returned to NOACCESS.  A key wiped by another
    thread's wipe_all() or KeyRing.destroy() while it is written is
    KeyDestroyedError, with no file left; its destroy() lets the write
    finish with the whole key.  Without O_TMPFILE, the temporary files a
    killed write_key of the same name left are unlinked first.  With
    `encoding` "hex", "base64" or "base64url" the file holds the key as
    that text (base64 with "=" padding) and a newline, encoded in guarded
    memory, which is wiped after.

    With `passphrase` (a SecureBuffer; str and bytes are TypeError) or `kek`
    (a 32-byte SecureKey), not both, the file is an encrypted key file
    (securekeys.encrypted): the key encrypted by XChaCha20-Poly1305 under the
    KEK, or under Argon2id(passphrase) with `opslimit` and `memlimit`
    (None: OPSLIMIT_MODERATE, MEMLIMIT_MODERATE), which must lie within
    OPSLIMIT_MIN..OPSLIMIT_SENSITIVE and MEMLIMIT_MIN..MEMLIMIT_SENSITIVE
    (ValueError).  Limits without a passphrase are ValueError: they would
    protect nothing.
    """
    if not isinstance(key, SecureBuffer):
        raise TypeError(f"write_key() takes a SecureBuffer, not {type(key).__name__}")
    kind = check_secret(passphrase, kek)
    if (opslimit is not None or memlimit is not None) and kind != PASSPHRASE:
        raise ValueError("opslimit= and memlimit= are Argon2id's limits for passphrase=: "
                         "without a passphrase they protect nothing")
    text: SecureBuffer | None = None
    content: SecureBuffer | bytes = key
    if kind:
        if encoding != "raw":
            raise ValueError(f"encoding={encoding!r} is for plain key files: an encrypted key file is binary")
        secret = passphrase if passphrase is not None else kek
        assert secret is not None
        # Borrows the key: a destroyed one is fatal before any file exists.
        content = encrypt_key(key, kind, secret, OPSLIMIT_MODERATE if opslimit is None else opslimit,
                              MEMLIMIT_MODERATE if memlimit is None else memlimit)
    elif encoding != "raw":
        check_options("strict", encoding)
        content = text = _encode_text(key, encoding)   # borrows the key, as above
    # Prepared before anything exists, so that taking the file back is one
    # C call with no Python before it: a second signal handler raising there
    # cannot skip it.
    target = os.fsencode(os.fspath(path))
    placed: list[tuple[int, int]] = []   # the new file's (st_dev, st_ino), from just before its link
    try:
        try:
            _write_key(path, content, placed)
        finally:
            if text is not None:
                text.destroy()
    except BaseException:
        # A signal handler may raise after the link too (as close(2)
        # returns): when write_key raises, the file it linked goes, and only
        # that file (the identity is checked in the same C call).
        if placed:
            _unlink_if_same(_AT_FDCWD, target, *placed[0])
        raise


def _write_key(path: StrOrBytesPath, key: SecureBuffer | bytes, placed: list[tuple[int, int]]) -> None:
    where = os.fspath(path)
    directory, name = os.path.split(os.fsencode(where))
    try:
        if not name:
            raise IsADirectoryError(errno.EISDIR, "a key path must end in a file name")
        # Before anything exists: the directory must be open to fsync it at
        # the end, and one we may not open (mode 0300) fails here, not after.
        try:
            dir_fd = os.open(directory or b".", _DIR_FLAGS)
        except OSError as e:
            hint = " (write_key opens it to fsync it: it needs read permission too)" if e.errno == errno.EACCES else ""
            raise OSError(e.errno, f"cannot open its directory: {e.strerror}{hint}") from None
        try:
            _write_in(dir_fd, name, key, placed)
        finally:
            os.close(dir_fd)
    except OSError as e:
        # The user's path, never a temporary name they did not give.
        raise OSError(e.errno, e.strerror, where) from None


def _write_in(dir_fd: int, name: bytes, key: SecureBuffer | bytes, placed: list[tuple[int, int]]) -> None:
    try:
        there = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISREG(there.st_mode) and there.st_nlink > 1:
            # Killed between its link and its unlink, a write_key without
            # O_TMPFILE left the key complete under two names, and read_key
            # refuses the second link: taking the temporary name away makes
            # the key readable again.  It is still not replaced.
            _take_back_leftovers(dir_fd, name)
        raise FileExistsError(errno.EEXIST, "refusing to replace an existing file")
    fd, temp = -1, None
    try:
        # Borrowed before any file exists: borrowing a destroyed key is fatal
        # and must not leave an empty file behind.
        with key.reading() if isinstance(key, SecureBuffer) else memoryview(key) as view:
            fd, temp = _new_file(dir_fd, name)
            os.fchmod(fd, _KEY_MODE)   # independent of the umask
            if isinstance(key, SecureBuffer):
                # In C, as a counted user of the key: a wipe_all() or
                # KeyRing.destroy() under the write is KeyDestroyedError
                # (the file goes, below), never EFAULT or a file of zeros.
                try:
                    _write_from(key, fd)
                except KeyDestroyedError:
                    raise KeyDestroyedError("write_key(): the key was destroyed (wipe_all() or "
                                            "KeyRing.destroy()) while it was being written; "
                                            "no file was left") from None
            else:
                written = 0
                while written < len(view):
                    written += os.write(fd, view[written:])
        os.fsync(fd)
        # Recorded before the link: an exception raised by a signal handler
        # as link(2) returns must still take the link back (_unlink_if_same
        # leaves a name that is not this file alone).
        ours = os.fstat(fd)
        placed.append((ours.st_dev, ours.st_ino))
        if temp is None:   # the unnamed file gets its only name; never replaces (EEXIST)
            os.link(b"/proc/self/fd/%d" % fd, name, dst_dir_fd=dir_fd)
        else:
            os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        if temp is not None:
            os.unlink(temp, dir_fd=dir_fd)
            temp = None
        os.fsync(dir_fd)
    except BaseException:
        if placed:
            _unlink_if_same(dir_fd, name, *placed[0])
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def _new_file(dir_fd: int, name: bytes) -> tuple[int, bytes | None]:
    """An unnamed file in the directory, or where the filesystem (or a system
    without /proc) cannot link one, a new temporary file beside `name`."""
    if os.path.isdir(b"/proc/self/fd"):
        try:
            return os.open(".", _UNNAMED_FLAGS, _KEY_MODE, dir_fd=dir_fd), None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR):   # EISDIR: kernel without O_TMPFILE
                raise
    # A key (or part of one) that a killed write_key of this name left under
    # a temporary name: gone before a new one is made.
    _take_back_leftovers(dir_fd, name)
    temp = b".%s.%s.tmp" % (_temp_stem(dir_fd, name), secrets.token_hex(8).encode())
    # Mode 0000 until it is locked (the caller's fchmod makes it 0400):
    # _take_back_leftovers only takes 0400 files, so it never takes one
    # between this open and the lock.
    fd = os.open(temp, _TEMP_FLAGS, 0, dir_fd=dir_fd)
    # Held until the fd closes, which a kill -9 does too: the lock is how
    # _take_back_leftovers tells a live write_key's file from a dead one's.
    # Where the filesystem has no locks, its leftovers are left alone.
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, temp


def _temp_stem(dir_fd: int, name: bytes) -> bytes:
    # Within NAME_MAX whatever the name's length; 64 random bits keep it unique.
    return name[:os.fpathconf(dir_fd, "PC_NAME_MAX") - _TEMP_EXTRA]


def _take_back_leftovers(dir_fd: int, name: bytes) -> None:
    """Unlink the temporary files a write_key of `name` killed in its
    no-O_TMPFILE fallback left in the directory: `.NAME.<16 hex>.tmp`, a
    regular file of this uid, mode 0400, that no live write_key holds
    (flock).  A kill before the link leaves one alone (the key, or part of
    it, where nobody looks); a kill between the link and the unlink leaves
    it as the key's second link.  Anything else is left as it is."""
    pattern = re.compile(rb"\.%s\.[0-9a-f]{16}\.tmp" % re.escape(_temp_stem(dir_fd, name)))
    for entry in os.listdir(dir_fd):
        leftover = os.fsencode(entry)
        if not pattern.fullmatch(leftover):
            continue
        try:
            fd = os.open(leftover, _LEFTOVER_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue   # gone meanwhile, a link, not ours to read
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != _KEY_MODE:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                # EWOULDBLOCK: a write_key in flight, in this process or
                # another.  Any other error: no locks here, no way to tell.
                continue
            _unlink_if_same(dir_fd, leftover, st.st_dev, st.st_ino)
        finally:
            os.close(fd)
