"""Looking a key file up and opening it, without opening anything that is
not a regular file, and `beneath=` a directory with openat2(2) that is
retried, boundedly, across a Kubernetes-style update of its links.

Part of files.py's read path (read_key, KeyRing.read_key, the CLI's check).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from securekeys._memory import (
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    _openat2,
)
from securekeys.errors import KeyFileError
from securekeys.trust import _MAX_SYMLINKS, check_file_type, open_trusted_directory

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

# A key file is looked up with O_PATH, which opens nothing: no driver's open
# runs for a device, no FIFO gains a reader, a socket is no ENXIO.  Only a
# file that fstat then shows to be regular is opened for reading, through
# /proc/self/fd/N (the very inode looked up, whatever its name holds by then).
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NOCTTY: opening a terminal must never make it this process's controlling
# terminal (a swap after the look could still slip one in without /proc).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
_REOPEN_FLAGS = os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK   # a magic link: followed
_AT_FDCWD = -100   # openat2's "relative to the working directory"
# Beneath a directory, links that stay inside it are followed, the last one
# too (no O_NOFOLLOW); nothing may lead out of it, onto another filesystem or
# through a /proc magic link.
_BENEATH_FLAGS = os.O_PATH | os.O_CLOEXEC
_READ_BENEATH_FLAGS = os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
_BENEATH_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
_DIRECTORY_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
# openat2 says EAGAIN when a rename raced a ".." it resolved beneath a
# directory, and ENOENT when Kubernetes removed the old ..TIMESTAMP directory
# after the lookup had read ..data's old target: try again, a few times.
_BENEATH_TRIES = 8


def _symlink_refusal(path: str | bytes) -> OSError:
    try:
        target = os.readlink(os.fsencode(path))
    except OSError:   # not a link itself: too many links in its directories
        return OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    fix = f"name the key file itself ({os.fsdecode(os.path.realpath(os.fsencode(path)))})"
    if target.split(b"/")[0] == b"..data":   # Kubernetes' AtomicWriter: key -> ..data/key
        directory, name = os.path.split(os.fsdecode(path))
        fix = f"a Kubernetes secret volume: read \"{name}\" with beneath=\"{directory or '.'}\""
    return KeyFileError(errno.ELOOP, f"refusing a symbolic link to {os.fsdecode(target)}: {fix}", path)


def _open_key_file(path: str | bytes) -> tuple[int, bool]:
    """Open a key file for reading once it is known to be a regular file;
    True when no symbolic link was followed.

    The common case costs one lookup: openat2 refusing every symbolic link
    on the way.  A path through a link (or a kernel before Linux 5.6) is
    looked up the ordinary way, and check_key_file then judges its links.
    """
    try:
        handle = _openat2(_AT_FDCWD, path, _PATH_FLAGS, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
        without_links = True
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOSYS):
            raise
        try:
            handle = os.open(path, _PATH_FLAGS)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _symlink_refusal(path) from None
            raise
        without_links = False
    return _open_for_reading(handle, path, lambda: os.open(path, _READ_FLAGS)), without_links


def _open_for_reading(handle: int, path: str | bytes, again: Callable[[], int]) -> int:
    """From the O_PATH descriptor `handle` (closed here) of a key file: a
    descriptor open for reading on the same file, once fstat of `handle`
    shows a regular file.  Anything else is refused by the rule it breaks,
    without ever being opened.  `again` opens the path itself, for a
    system without /proc (its inode is compared with the one looked up)."""
    try:
        looked = os.fstat(handle)
        if stat.S_ISLNK(looked.st_mode):   # O_PATH|O_NOFOLLOW found the link itself
            raise _symlink_refusal(path)
        check_file_type(looked, path)
        try:
            fd = os.open(b"/proc/self/fd/%d" % handle, _REOPEN_FLAGS)
        except OSError as e:
            if e.errno != errno.ENOENT:   # the file is pinned by `handle`: ENOENT means no /proc
                raise OSError(e.errno, e.strerror, path) from None
            try:
                fd = again()
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise _symlink_refusal(path) from None
                raise OSError(e.errno, e.strerror, path) from None
    finally:
        os.close(handle)
    try:
        now = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if (now.st_dev, now.st_ino) != (looked.st_dev, looked.st_ino):
        os.close(fd)   # only through `again`: /proc/self/fd/N is the inode looked up
        raise KeyFileError(errno.EAGAIN, "the path changed while the key was read: try again", path)
    return fd


def _open_beneath(directory: StrOrBytesPath, path: str | bytes) -> tuple[int, str | bytes]:
    """Open `path`, relative, beneath `directory` for reading once it is
    known to be a regular file: the fd, and the two joined to name the key
    in messages.  ValueError for a path that cannot be beneath it, before
    anything is opened."""
    where = os.fspath(directory)
    shown = _joined(where, path)
    _check_relative(path, where)
    dir_fd = _open_directory(where, shown)
    try:
        handle = _look_up_beneath(dir_fd, path, where, shown)
        return _open_for_reading(handle, shown, lambda: _openat2(dir_fd, path, _READ_BENEATH_FLAGS,
                                                                 _BENEATH_RESOLVE)), shown
    finally:
        os.close(dir_fd)


def _look_up_beneath(dir_fd: int, path: str | bytes, where: str | bytes, shown: str | bytes) -> int:
    """openat2 beneath `dir_fd`, tried again (at most _BENEATH_TRIES times
    in all) while a Kubernetes update can explain the failure: EAGAIN (a
    rename raced a '..'), or ENOENT on a path through symbolic links that
    changed since the last look.  A path whose links stand still (or that
    has none) is missing after at most two lookups, never waited for."""
    links: tuple[tuple[int, int, bytes], ...] | None = None
    for _ in range(_BENEATH_TRIES):
        try:
            return _openat2(dir_fd, path, _BENEATH_FLAGS, _BENEATH_RESOLVE)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                continue
            if e.errno == errno.ENOENT:
                # The lookup may have read ..data's old target just before
                # the update renamed a new ..data in and removed the old
                # directory: if the links look different from the last
                # look (the first look always does), the path changed.
                now = _links_on_the_way(dir_fd, path)
                if now and now != links:
                    links = now
                    continue
            raise _beneath_error(e, dir_fd, path, where, shown) from None
    raise OSError(errno.EAGAIN, "the directory kept changing while the key was opened: try again", shown)


def _links_on_the_way(dir_fd: int, path: str | bytes) -> tuple[tuple[int, int, bytes], ...]:
    """The symbolic links (device, inode, target) that resolving `path`
    beneath `dir_fd` meets now, in order, as far as it resolves: what a
    Kubernetes update changes (its rename puts a new ..data link in place).
    It stops where the kernel's lookup would fail; nothing is read but links."""
    found: list[tuple[int, int, bytes]] = []
    todo = os.fsencode(path).split(b"/")[::-1]
    entered: list[int] = []   # O_PATH descriptors of the directories walked into, innermost last
    try:
        while todo and len(found) <= _MAX_SYMLINKS:
            part = todo.pop()
            if part in (b"", b"."):
                continue
            if part == b"..":
                if not entered:
                    break   # it would leave dir_fd: the kernel refuses that with EXDEV, not ENOENT
                os.close(entered.pop())
                continue
            try:
                step = os.open(part, _PATH_FLAGS, dir_fd=entered[-1] if entered else dir_fd)
            except OSError:
                break       # where the lookup ends: missing, or not a directory
            try:
                st = os.fstat(step)
                if not stat.S_ISLNK(st.st_mode):
                    entered.append(step)
                    step = -1
                    continue
                target = os.readlink(b"", dir_fd=step)   # this very link, whatever its name holds now
            finally:
                if step >= 0:
                    os.close(step)
            found.append((st.st_dev, st.st_ino, target))
            if target.startswith(b"/"):
                break       # absolute: refused beneath a directory (EXDEV)
            todo += target.split(b"/")[::-1]
    finally:
        for fd in entered:
            os.close(fd)
    return tuple(found)


def _joined(directory: str | bytes, path: str | bytes) -> str | bytes:
    if isinstance(directory, str) and isinstance(path, str):
        return os.path.join(directory, path)
    return os.path.join(os.fsencode(directory), os.fsencode(path))


def _check_relative(path: str | bytes, directory: str | bytes) -> None:
    """A path that, read as written, names something inside `directory`."""
    parts = os.fsencode(path).split(b"/")
    if not path or parts[0] == b"":
        raise ValueError(f"with beneath={directory!r}, the key's path must be relative to it, not {path!r}")
    depth = 0
    for part in parts:
        if part == b"..":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{path!r} leaves beneath={directory!r} through '..'")
        elif part not in (b"", b"."):
            depth += 1
    if depth == 0:
        raise ValueError(f"{path!r} names beneath={directory!r} itself, not a key in it")


def _open_directory(directory: str | bytes, shown: str | bytes) -> int:
    """An O_PATH descriptor of `directory`, reached through no symbolic link
    that someone other than root or this uid made (as for a key's directories)."""
    try:
        return _openat2(_AT_FDCWD, directory, _DIRECTORY_FLAGS, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    except OSError as e:
        if e.errno == errno.ENOSYS:
            raise _without_openat2(shown) from None
        if e.errno != errno.ELOOP:
            raise
    absolute = os.fsencode(directory)
    if not absolute.startswith(b"/"):
        absolute = os.path.join(os.getcwdb(), absolute)
    try:
        fd = open_trusted_directory(absolute, shown)
    except KeyFileError:
        raise
    except OSError as e:
        raise OSError(e.errno, e.strerror, directory) from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory)
    return fd


def _beneath_error(error: OSError, dir_fd: int, path: str | bytes, directory: str | bytes,
                   shown: str | bytes) -> OSError:
    if error.errno == errno.ENOSYS:
        return _without_openat2(shown)
    if error.errno == errno.ELOOP:
        return KeyFileError(errno.ELOOP, "refusing a path through a /proc magic link, or through more than "
                            "40 symbolic links", shown)
    if error.errno != errno.EXDEV:
        return OSError(error.errno, error.strerror, shown)
    # EXDEV is either rule: a second look without RESOLVE_NO_XDEV (O_PATH
    # opens nothing) tells which one the path broke.
    try:
        os.close(_openat2(dir_fd, path, os.O_PATH | os.O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS))
    except OSError:
        return KeyFileError(errno.EXDEV, f"refusing a path that leads out of {os.fsdecode(directory)}: "
                            "a symbolic link on the way is absolute or climbs out with '..' "
                            "(only links that stay inside are followed)", shown)
    return KeyFileError(errno.EXDEV, f"refusing a path that crosses into another filesystem mounted "
                        f"inside {os.fsdecode(directory)}: pass that mount point as beneath=", shown)


def _without_openat2(shown: str | bytes) -> OSError:
    return OSError(errno.ENOSYS, "beneath= needs the openat2(2) system call (Linux 5.6 or later), "
                   "which this kernel lacks", shown)


