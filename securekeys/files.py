"""Key files: read straight into guarded memory, written 0400 atomically.

Pure Python over `SecureBuffer.readinto` and os-level calls: no buffered file
object, `bytes` or `bytearray` ever holds key bytes.  Every check of the file
runs on the open file descriptor (no check-then-open race).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

from securekeys._memory import (
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    SecureBuffer,
    SecureKey,
    _at_eof,
    _openat2,
    _read_key_strict,
)
from securekeys.errors import KeyFileError

__all__ = ["read_key", "write_key"]

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

# O_NOCTTY: opening a terminal must never make it this process's controlling terminal.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
# Read permission is what fsync of a directory needs: O_PATH cannot fsync, and
# O_WRONLY is refused for directories.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# An unnamed file, linked into place when complete (no O_EXCL: that forbids the link).
_UNNAMED_FLAGS = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_EXTRA = len(b"..") + 16 + len(b".tmp")   # ".NAME.<16 hex>.tmp" around the name
_KEY_MODE = 0o400
_AT_FDCWD = -100   # openat2's "relative to the working directory"
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC   # a link itself, not its target
_MAX_SYMLINKS = 40   # the kernel's own limit for one path lookup


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_key_file(fd: int, path: StrOrBytesPath, size: int, *,
                   opened_without_links: bool = False) -> os.stat_result:
    """The strict checks on an open key file; return its verified fstat.

    Refuses anything but a regular file of exactly `size` bytes, owned by the
    effective uid, with no group/other permission bit and no second hard
    link, reached through no symbolic link that someone other than root or
    this uid could have made.  IsADirectoryError for a directory, KeyFileError
    for everything else.  This is the one place for these rules: trust
    policies that accept more extend this function.  `opened_without_links`:
    the kernel opened `fd` through no symbolic link at all (openat2), so the
    directories need no second look.
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
            f"refusing a key with permissions {octal_mode(st.st_mode)}: "
            "group or others may access it (no group/other bits: e.g. 0400 or 0600)",
            path,
        )
    if st.st_nlink > 1:
        # Another name outlives `rm` of this one and may sit in a directory
        # with other permissions.
        raise KeyFileError(
            errno.EPERM,
            f"refusing a key with {st.st_nlink} hard links: its other names can keep or expose it "
            f"(find them with: find / -xdev -samefile {os.fsdecode(path)}; remove them, or copy the key to a new file)",
            path,
        )
    if st.st_size != size:
        raise KeyFileError(errno.EINVAL, f"wrong size: expected {size} bytes, the file has {st.st_size}", path)
    if not opened_without_links:
        _check_directories(fd, st, path)
    return st


def octal_mode(mode: int) -> str:
    """Permission bits as a user writes them for chmod: 0400, 0000."""
    return f"{stat.S_IMODE(mode):04o}"


def _check_directories(fd: int, st: os.stat_result, path: StrOrBytesPath) -> None:
    """Refuse a key reached through a symbolic link in its directories owned by
    neither root nor this uid: whoever made it can point the path at another
    file of ours.  System links such as /var/run -> /run are root's."""
    where = os.fsencode(path)
    if not where.startswith(b"/"):
        where = os.path.join(os.getcwdb(), where)
    try:
        found = os.readlink(b"/proc/self/fd/%d" % fd)
        if found == where or found == os.path.normpath(where):
            return   # the kernel found it where the path says: no link mattered
    except OSError:
        pass         # no /proc: walk the path
    directory, name = os.path.split(where)
    try:
        dir_fd = _open_trusted_directory(directory, path)
        try:
            now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(dir_fd)
    except KeyFileError:
        raise
    except OSError as e:
        raise KeyFileError(e.errno, f"the path changed while the key was read ({e.strerror}): try again", path) from None
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        raise KeyFileError(errno.EAGAIN, "the path changed while the key was read: try again", path)


def _open_trusted_directory(directory: bytes, path: StrOrBytesPath) -> int:
    """An O_PATH descriptor of `directory` (absolute), resolved as the kernel
    does but one component at a time, each relative to the descriptor of the
    one before (so nothing can be swapped between two steps), following only
    symbolic links that root or this uid owns."""
    euid = os.geteuid()
    todo = directory.split(b"/")[::-1]
    fd = os.open(b"/", _PATH_FLAGS)
    links = 0
    try:
        while todo:
            part = todo.pop()
            if part in (b"", b"."):
                continue
            step = os.open(part, _PATH_FLAGS, dir_fd=fd)
            link = os.fstat(step)
            if not stat.S_ISLNK(link.st_mode):
                # Swap before closing: an exception in between (a signal
                # handler's) must never make the except below close twice.
                fd, previous = step, fd
                os.close(previous)
                continue
            try:
                target = os.readlink(b"", dir_fd=step)   # this very link, whatever its name holds now
            finally:
                os.close(step)
            if link.st_uid not in (0, euid):
                owners = "root" if euid == 0 else f"root or uid {euid}"
                raise KeyFileError(
                    errno.EPERM,
                    f"refusing a path through the symbolic link {_shown(fd, part)} -> {os.fsdecode(target)} "
                    f"owned by uid {link.st_uid}: only links owned by {owners} are followed; "
                    "name the key by a path without it",
                    path,
                )
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            if target.startswith(b"/"):
                root = os.open(b"/", _PATH_FLAGS)
                fd, previous = root, fd
                os.close(previous)
            todo += target.split(b"/")[::-1]
        return fd
    except BaseException:
        os.close(fd)
        raise


def _shown(dir_fd: int, name: bytes) -> str:
    """`name` in the directory `dir_fd`, as a path for a message."""
    try:
        return os.fsdecode(os.path.join(os.readlink(b"/proc/self/fd/%d" % dir_fd), name))
    except OSError:   # no /proc
        return os.fsdecode(name)


def _symlink_refusal(path: str | bytes) -> OSError:
    try:
        target = os.readlink(os.fsencode(path))
    except OSError:   # not a link itself: too many links in its directories
        return OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    return KeyFileError(
        errno.ELOOP,
        f"refusing a symbolic link to {os.fsdecode(target)}: "
        f"name the key file itself ({os.fsdecode(os.path.realpath(os.fsencode(path)))})",
        path,
    )


def _open_key_file(path: str | bytes) -> tuple[int, bool]:
    """Open a key file for reading; True when no symbolic link was followed.

    The common case costs one system call: openat2 refusing every symbolic
    link on the way.  A path through a link (or a kernel before Linux 5.6)
    is opened the ordinary way, and check_key_file then judges its links.
    """
    try:
        return _openat2(_AT_FDCWD, path, _READ_FLAGS, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), True
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOSYS):
            raise
    try:
        return os.open(path, _READ_FLAGS), False
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _symlink_refusal(path) from None
        raise


def read_key(path: StrOrBytesPath, size: int) -> SecureKey:
    """Read a `size`-byte key file straight into guarded memory; READONLY.

    The file must pass check_key_file(): a regular file owned by this
    process's effective uid, with no group/other permission bits and one
    hard link, holding exactly `size` bytes; symlinks are refused, and so are
    links in its directories owned by neither root nor this uid.  Otherwise
    KeyFileError (an OSError) names the path and why; a missing file is
    FileNotFoundError.  Nothing is left behind on error.
    """
    key = SecureKey(size)   # checks `size` before anything touches the disk
    if not _read_key_strict(key, path):   # the plain case, in C; anything else:
        fill_key_from_file(key, path)     # every check again, and a precise error
    return key


def fill_key_from_file(key: SecureKey, path: StrOrBytesPath) -> os.stat_result:
    """Fill a new (READWRITE) key from a key file with every read_key check
    and seal it READONLY; return the verified fstat of the open file.  On any
    error, destroy the key and raise."""
    size = key.size
    fd = -1
    try:
        path = os.fspath(path)  # errors name the path as the os module does
        fd, without_links = _open_key_file(path)
        st = check_key_file(fd, path, size, opened_without_links=without_links)
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
    FileExistsError.  The bytes go from guarded memory into an unnamed file
    in the same directory (O_TMPFILE; where the filesystem lacks it, a
    temporary `.NAME.<random>.tmp`), which is fsynced and then linked into
    place; the directory is fsynced too, so it must be readable as well as
    writable.  When write_key raises, nothing is left: no key under `path`,
    no temporary file; the error names `path`.  A NOACCESS key is borrowed
    for the write and returned to NOACCESS.
    """
    if not isinstance(key, SecureBuffer):
        raise TypeError(f"write_key() takes a SecureBuffer, not {type(key).__name__}")
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
            _write_in(dir_fd, name, key)
        finally:
            os.close(dir_fd)
    except OSError as e:
        # The user's path, never a temporary name they did not give.
        raise OSError(e.errno, e.strerror, where) from None


def _write_in(dir_fd: int, name: bytes, key: SecureBuffer) -> None:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    else:
        raise FileExistsError(errno.EEXIST, "refusing to replace an existing file")
    fd, temp, linked = -1, None, False
    try:
        # Borrowed before any file exists: borrowing a destroyed key is fatal
        # and must not leave an empty file behind.
        with key.reading() as view:
            fd, temp = _new_file(dir_fd, name)
            os.fchmod(fd, _KEY_MODE)   # independent of the umask
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
        os.fsync(fd)
        if temp is None:   # the unnamed file gets its only name; never replaces (EEXIST)
            os.link(b"/proc/self/fd/%d" % fd, name, dst_dir_fd=dir_fd)
        else:
            os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        linked = True
        if temp is not None:
            os.unlink(temp, dir_fd=dir_fd)
            temp = None
        os.fsync(dir_fd)
    except BaseException:
        if linked:
            with contextlib.suppress(OSError):   # the first error is the one to report
                _unlink_if_same(fd, dir_fd, name)
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
    # Within NAME_MAX whatever the name's length; 64 random bits keep it unique.
    room = os.fpathconf(dir_fd, "PC_NAME_MAX") - _TEMP_EXTRA
    temp = b".%s.%s.tmp" % (name[:room], secrets.token_hex(8).encode())
    return os.open(temp, _TEMP_FLAGS, _KEY_MODE, dir_fd=dir_fd), temp


def _unlink_if_same(fd: int, dir_fd: int, name: bytes) -> None:
    """Take back the link we made, unless someone has replaced it since."""
    ours, there = os.fstat(fd), os.lstat(name, dir_fd=dir_fd)
    if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino):
        os.unlink(name, dir_fd=dir_fd)
