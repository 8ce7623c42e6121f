"""Key files: read straight into guarded memory, written 0400 atomically.

Pure Python over `SecureBuffer.readinto` and os-level calls: no buffered file
object, `bytes` or `bytearray` ever holds key bytes.  Every check runs on the
open file descriptor (no check-then-open race).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat

from securekeys._memory import SecureBuffer, SecureKey, _at_eof
from securekeys.errors import KeyFileError

__all__ = ["read_key", "write_key"]

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_KEY_MODE = 0o400


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_key_file(fd: int, path: StrOrBytesPath, size: int) -> os.stat_result:
    """Refuse an open key file that is not a private regular file of `size` bytes.

    Raises IsADirectoryError for a directory and KeyFileError for anything
    else that is wrong (kind, owner, permissions, size).
    """
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a key file", path)
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(errno.EINVAL, f"refusing {_kind(st.st_mode)}: a key must be a regular file", path)
    euid = os.geteuid()
    if st.st_uid != euid:
        raise KeyFileError(errno.EPERM, f"refusing a key owned by uid {st.st_uid}, not by this process (uid {euid})", path)
    if st.st_mode & 0o077:
        raise KeyFileError(
            errno.EPERM,
            f"refusing a key with permissions {stat.S_IMODE(st.st_mode):#o}: "
            "group or others may access it (no group/other bits: e.g. 0o400 or 0o600)",
            path,
        )
    if st.st_size != size:
        raise KeyFileError(errno.EINVAL, f"wrong size: expected {size} bytes, the file has {st.st_size}", path)
    return st


def read_key(path: StrOrBytesPath, size: int) -> SecureKey:
    """Read a `size`-byte key file straight into guarded memory; READONLY.

    The file must be a regular file owned by this process's effective uid,
    with no group/other permission bits, holding exactly `size` bytes; symlinks
    are refused.  Otherwise KeyFileError (an OSError) names the path and why;
    a missing file is FileNotFoundError.  Nothing is left behind on error.
    """
    key = SecureKey(size)   # checks `size` before anything touches the disk
    fill_key_from_file(key, path)
    return key


def fill_key_from_file(key: SecureKey, path: StrOrBytesPath) -> os.stat_result:
    """Fill a new (READWRITE) key from a key file with every read_key check
    and seal it READONLY; return the verified fstat of the open file.  On any
    error, destroy the key and raise."""
    size = key.size
    fd = -1
    try:
        path = os.fspath(path)  # errors name the path as the os module does
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise KeyFileError(errno.ELOOP, "refusing a symbolic link", path) from None
            raise
        st = check_key_file(fd, path, size)
        try:
            got = key.readinto(fd)
            complete = got == size and _at_eof(fd)
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None
        if not complete:
            actual = got if got < size else "more"
            raise KeyFileError(errno.EINVAL, f"wrong size: expected {size} bytes, read {actual} (the file changed)", path)
        key.readonly()
        return st
    except BaseException:
        key.destroy()
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def write_key(path: StrOrBytesPath, key: SecureBuffer) -> None:
    """Write `key` to a new file at `path` with mode 0400, atomically.

    Never replaces anything: an existing path (even a dangling symlink) raises
    FileExistsError.  The bytes go from guarded memory to a temporary file in
    the same directory, which is fsynced and then linked into place; the
    directory is fsynced too.  No partial key is ever visible under `path`,
    and no temporary file is left behind on error.  A NOACCESS key is borrowed
    for the write and returned to NOACCESS.
    """
    if not isinstance(key, SecureBuffer):
        raise TypeError(f"write_key() takes a SecureBuffer, not {type(key).__name__}")
    target = os.fsdecode(path)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "refusing to replace an existing file", target)
    directory = os.path.dirname(target) or "."
    temp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, _TEMP_FLAGS, _KEY_MODE)
    try:
        try:
            os.fchmod(fd, _KEY_MODE)   # independent of the umask
            with key.reading() as view:
                written = 0
                while written < len(view):
                    written += os.write(fd, view[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, target)   # fails with EEXIST rather than replacing
    except BaseException:
        os.unlink(temp)
        raise
    os.unlink(temp)
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
