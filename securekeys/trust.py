"""Which key files securekeys trusts: the checks on an open key file.

check_key_file() is the one place for the rules.  Under every policy a key
file is a regular file with one hard link, of the expected size, reached
through no symbolic link that someone other than root or this uid made, and
nobody but its owner and group may access it.  The policies differ only in
whose file it may be and what its group may do:

  strict        owned by the effective uid, no group or other permission bit;
  root-managed  that, or owned by root with group read at most (PostgreSQL's
                rule for ssl_key_file): Kubernetes fsGroup, a Swarm secret's
                gid, a root-owned mount;
  systemd       that, or owned by root, mode 0400 plus a POSIX ACL granting
                read to this uid alone: what LoadCredential= writes.

Every refusal is a KeyFileError naming the rule and the smallest change that
fixes it.  Nothing here reads a key byte: only fstat, getxattr and readlink.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import stat
import struct
from typing import Literal

from securekeys._memory import _text_lengths
from securekeys.encrypted import OVERHEAD_BYTES
from securekeys.errors import KeyFileError

__all__ = ["ENCODINGS", "TRUST_POLICIES", "Encoding", "Trust", "check_file_type", "check_key_file", "check_options",
           "describe_access", "octal_mode", "text_length_words"]

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

Trust = Literal["strict", "root-managed", "systemd"]
Encoding = Literal["raw", "hex", "base64", "base64url"]
TRUST_POLICIES: tuple[Trust, ...] = ("strict", "root-managed", "systemd")
ENCODINGS: tuple[Encoding, ...] = ("raw", "hex", "base64", "base64url")

_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC   # a link itself, not its target
_MAX_SYMLINKS = 40   # the kernel's own limit for one path lookup
_ROOT = 0

# The binary form of system.posix_acl_access (linux/posix_acl_xattr.h):
# a little-endian u32 version, then entries of (u16 tag, u16 perm, u32 id).
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ACL_READ = 4
_NO_ACL = (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP)

# Kubernetes' AtomicWriter keeps a secret volume's files in a directory named
# for the time it wrote them (..2024_01_31_12_00_00.123456789), behind ..data.
_KUBERNETES_DIR = re.compile(rb"\.\.data|\.\.\d{4}(_\d\d){5}\.\d+")


def check_options(trust: str, encoding: str) -> None:
    """ValueError for a trust policy or an encoding securekeys does not know."""
    if trust not in TRUST_POLICIES:
        raise ValueError(f"unknown trust policy {trust!r}: strict, root-managed or systemd")
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown key encoding {encoding!r}: raw, hex, base64 or base64url")


def check_key_file(fd: int, path: StrOrBytesPath, size: int, trust: Trust = "strict",
                   encoding: Encoding = "raw", opened_without_links: bool = False, *,
                   encrypted: bool = False) -> os.stat_result:
    """The checks on an open key file; return its verified fstat.

    Refuses anything but a regular file with one hard link, owned and
    permitted as the `trust` policy allows (see the module's docstring),
    reached through no symbolic link that someone other than root or this uid
    could have made, and of the length a `size`-byte key has in `encoding`
    (a text key may end in one newline; its exact length is checked when it
    is decoded).  IsADirectoryError for a directory, KeyFileError for
    everything else.  `opened_without_links`: the kernel opened `fd` through
    no symbolic link it was not told to allow (openat2), so the directories
    need no second look.  `encrypted`: an encrypted key file of a
    `size`-byte key (see securekeys.encrypted), `size` + 88 bytes.
    """
    st = os.fstat(fd)
    check_file_type(st, path)
    if st.st_mode & 0o7000:
        # A key has no use for set-user-ID, set-group-ID or sticky bits: a
        # file that carries them was not made as a key file.
        raise KeyFileError(errno.EPERM, f"refusing a key with permissions {octal_mode(st.st_mode)}: "
                           "set-user-ID, set-group-ID and sticky bits have no place on a key "
                           f"(chmod {octal_mode(st.st_mode & 0o777)} {shlex.quote(os.fsdecode(path))})", path)
    # The strict rule in two comparisons: the policies are asked only when it fails.
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        _check_trust(fd, st, path, trust)
    if st.st_nlink > 1:
        # Another name outlives `rm` of this one and may sit in a directory
        # with other permissions.
        raise KeyFileError(
            errno.EPERM,
            f"refusing a key with {st.st_nlink} hard links: its other names can keep or expose it "
            f"(find them with: find / -xdev -samefile {shlex.quote(os.fsdecode(path))}; remove them, "
            "or copy the key to a new file)",
            path,
        )
    if encrypted:
        _check_encrypted_size(st, path, size)
    elif encoding == "raw":
        if st.st_size != size:
            raise WrongSizeError(errno.EINVAL, f"wrong size: expected {size} bytes, the file has {st.st_size}"
                                 f"{_text_hint(st.st_size, size)}", path)
    else:
        _check_text_size(st, path, size, encoding)
    if not opened_without_links:
        _check_directories(fd, st, path)
    return st


def check_file_type(st: os.stat_result, path: StrOrBytesPath) -> None:
    """The first rule, alone: a key file is a regular file.  It needs only
    the fstat of an O_PATH descriptor, so read_key applies it before the file
    is opened for reading: opening a FIFO, a socket or a device runs its
    driver's open (or fails with ENXIO before anything could name the rule)."""
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a key file", path)
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(errno.EINVAL, f"refusing {_kind(st.st_mode)}: a key must be a regular file", path)


def octal_mode(mode: int) -> str:
    """Permission bits as a user writes them for chmod: 0400, 0000."""
    return f"{stat.S_IMODE(mode):04o}"


def text_length_words(size: int, encoding: str) -> str:
    """How long a `size`-byte key is as text: "44 characters (43 without padding)"."""
    padded, unpadded = _text_lengths(size, encoding)
    if padded == unpadded:
        return f"{padded} characters"
    return f"{padded} characters ({unpadded} without padding)"


def describe_access(st: os.stat_result, trust: str) -> list[str]:
    """What check_key_file() verified about the owner and mode of a file it accepted."""
    mode = octal_mode(st.st_mode)
    if st.st_uid == os.geteuid() and not st.st_mode & 0o077:
        return [f"owned by uid {st.st_uid} (this process's effective uid)",
                f"mode {mode}: no group or other permissions"]
    if trust == "systemd":
        return [f"owned by root, mode 0400 plus a POSIX ACL granting read to uid {os.geteuid()} alone "
                "(a systemd credential)",
                f"mode {mode}: the group bits are the ACL's mask (read); no other permissions"]
    return [f"owned by root, who delivers it (trusted as root-managed); group gid {st.st_gid}",
            f"mode {mode}: group read at most, no other permissions"]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _text_hint(length: int, size: int) -> str:
    """For a raw key of the wrong length: the encoding it has the length of,
    with a newline (without one, a raw key of another size is likelier)."""
    for encoding, names in (("hex", "hex"), ("base64", "base64 or base64url")):
        if length - 1 in _text_lengths(size, encoding) or length - 2 in _text_lengths(size, encoding):
            return f" (the length of a {size}-byte key as {names} text: pass encoding=\"{encoding}\" if it is one)"
    return ""


def _check_encrypted_size(st: os.stat_result, path: StrOrBytesPath, size: int) -> None:
    if st.st_size != size + OVERHEAD_BYTES:
        raise WrongSizeError(errno.EINVAL, f"wrong size: an encrypted key file of a {size}-byte key has "
                             f"{size + OVERHEAD_BYTES} bytes, the file has {st.st_size}", path)


def _check_text_size(st: os.stat_result, path: StrOrBytesPath, size: int, encoding: str) -> None:
    """Bound a text key's length from fstat, before anything is read: a huge
    file is refused here.  The exact length is the decoder's to check."""
    padded, unpadded = _text_lengths(size, encoding)
    if not unpadded <= st.st_size <= padded + len(b"\r\n"):   # the text, LF or CRLF
        raise WrongSizeError(
            errno.EINVAL,
            f"wrong size: a {size}-byte key in {encoding} is {text_length_words(size, encoding)} "
            f"and an optional newline, the file has {st.st_size} bytes",
            path,
        )


class WrongSizeError(KeyFileError):
    """A key file that passed every other check but has the wrong size:
    read_key looks at its first bytes for an encrypted key file's magic, to
    say which kind of file it is (this module reads no byte of a file)."""


# -- the policies ----------------------------------------------------------------

def _check_trust(fd: int, st: os.stat_result, path: StrOrBytesPath, trust: str) -> None:
    """Raise the KeyFileError of the first rule of `trust` that the file's
    owner and mode fail; return when `trust` accepts them."""
    check_options(trust, "raw")   # for a caller of check_key_file that skipped read_key's check
    refusal = _refusal(fd, st, path, trust)
    if refusal is None:
        return
    rule, fix = refusal
    if fix is None:
        fix = _other_policy(fd, st, path, trust) or _delivery_fix(fd, st, path)
    raise KeyFileError(errno.EPERM, f"{rule} ({fix})", path)


Refusal = tuple[str, str | None]   # the rule the file fails; its own fix, or None for the general one


def _refusal(fd: int, st: os.stat_result, path: StrOrBytesPath, trust: str) -> Refusal | None:
    """Why `trust` refuses the file's owner and mode, or None when it accepts them."""
    euid = os.geteuid()
    mode = octal_mode(st.st_mode)
    if st.st_mode & 0o007:
        if st.st_uid == euid:
            return f"refusing a key with permissions {mode}: group or others may access it", None
        return f"refusing a key with permissions {mode}: others may access it", None
    if st.st_uid == _ROOT and trust == "root-managed":
        return _root_managed_refusal(fd, st, path)
    if st.st_uid == _ROOT and trust == "systemd":
        return _systemd_refusal(fd, st, path, euid)
    if st.st_uid == euid:
        return (f"refusing a key with permissions {mode}: group or others may access it",
                "no group/other bits: e.g. 0400 or 0600")
    owners = f"this process (uid {euid})" if trust == "strict" else f"this process (uid {euid}) or root"
    return f"refusing a key owned by uid {st.st_uid}: trust=\"{trust}\" accepts keys owned by {owners}", None


def _root_managed_refusal(fd: int, st: os.stat_result, path: StrOrBytesPath) -> Refusal | None:
    mode = octal_mode(st.st_mode)
    if st.st_mode & 0o030:
        return (f"refusing a key owned by root with permissions {mode}: its group may write or execute it; "
                "trust=\"root-managed\" allows group read at most",
                "chmod g-wx: e.g. 0440")
    if st.st_mode & 0o040:
        named = [entry for entry in _acl_entries(fd, path) or () if entry[0] in (_ACL_USER, _ACL_GROUP)]
        if named:
            # With named entries the group bits are the ACL's mask: users
            # outside the file's group may read it.
            return (f"refusing a key owned by root with a POSIX ACL naming {_named(named)}: "
                    "trust=\"root-managed\" trusts the file's owner and group, not an ACL",
                    None)
    return None


def _systemd_refusal(fd: int, st: os.stat_result, path: StrOrBytesPath, euid: int) -> Refusal | None:
    what = f"refusing a key owned by root with permissions {octal_mode(st.st_mode)}"
    entries = _acl_entries(fd, path)
    if entries is None:
        return (f"{what} and no POSIX ACL: trust=\"systemd\" accepts a root-owned key only when "
                f"an ACL grants read to this uid ({euid}) alone", None)
    named_users = [entry for entry in entries if entry[0] == _ACL_USER]
    named_groups = [entry for entry in entries if entry[0] == _ACL_GROUP]
    perms = {tag: perm for tag, perm, _ in entries}
    if named_groups:
        rule = f"its ACL names {_named(named_groups)}"
    elif [uid for _, _, uid in named_users] != [euid]:
        rule = f"its ACL names {_named(named_users) or 'no user'}, not this uid ({euid}) alone"
    elif named_users[0][1] != _ACL_READ:
        rule = f"its ACL grants uid {euid} more than read"
    elif perms.get(_ACL_USER_OBJ) != _ACL_READ:
        rule = "its owner's permissions are not read only (mode 0400)"
    elif perms.get(_ACL_GROUP_OBJ, 0) or perms.get(_ACL_MASK, 0) & ~_ACL_READ or perms.get(_ACL_OTHER, 0):
        rule = "its ACL grants its group or others access, or its mask more than read"
    else:
        return None
    return (f"{what}: {rule}; trust=\"systemd\" accepts what LoadCredential= writes",
            f"mode 0400 and read for uid {euid} alone: setfacl --set u::r,u:{euid}:r,g::-,o::- PATH")


def _acl_entries(fd: int, path: StrOrBytesPath) -> list[tuple[int, int, int]] | None:
    """The entries (tag, perm, id) of the file's access ACL; None without one."""
    try:
        blob = os.getxattr(fd, _ACL_XATTR)
    except OSError as e:
        if e.errno in _NO_ACL:
            return None
        raise OSError(e.errno, f"cannot read its POSIX ACL: {e.strerror}", path) from None
    body = len(blob) - _ACL_HEADER.size
    if body < 0 or body % _ACL_ENTRY.size or _ACL_HEADER.unpack_from(blob)[0] != _ACL_VERSION:
        raise KeyFileError(errno.EINVAL, "refusing a key with a POSIX ACL in a form securekeys does not know", path)
    return list(_ACL_ENTRY.iter_unpack(blob[_ACL_HEADER.size:]))


def _named(entries: list[tuple[int, int, int]]) -> str:
    return ", ".join(("uid" if tag == _ACL_USER else "gid") + f" {ident}" for tag, _, ident in entries)


def _other_policy(fd: int, st: os.stat_result, path: StrOrBytesPath, trust: str) -> str | None:
    """The policy that accepts this file as it is, as the fix for a refusal."""
    for other, delivery in (("root-managed", "Kubernetes fsGroup, a Swarm secret's gid, a root-owned mount"),
                            ("systemd", "a systemd credential: see read_credential()")):
        if other != trust and _refusal(fd, st, path, other) is None:
            return f"if root delivers it ({delivery}), pass trust=\"{other}\""
    return None


def _delivery_fix(fd: int, st: os.stat_result, path: StrOrBytesPath) -> str:
    """The smallest fix for a file no policy accepts, in the words of what
    most likely delivered it (recognised by where the file really is)."""
    try:
        real = os.readlink(b"/proc/self/fd/%d" % fd)
    except OSError:   # no /proc
        real = os.fsencode(path)
    return _delivery_words(real, os.fsencode(path), st.st_uid)


def _delivery_words(real: bytes, given: bytes, owner: int) -> str:
    euid, egid = os.geteuid(), os.getegid()
    if any(_KUBERNETES_DIR.fullmatch(part) for part in real.split(b"/") + given.split(b"/")):
        return (f"a Kubernetes secret volume: set defaultMode: 0400 on the volume and fsGroup: {egid} "
                "in the pod's securityContext, then pass trust=\"root-managed\"")
    if real.startswith(b"/run/secrets/"):
        return (f"a Docker secret: use the long syntax with uid: \"{euid}\" and mode: 0400 "
                "(Swarm; Compose mounts a file secret as the host file is: chown and chmod 0400 it there)")
    if owner == euid:
        return "no group/other bits: e.g. 0400 or 0600"
    if owner == _ROOT:
        return (f"chmod o-rwx; with group read (0440) it needs trust=\"root-managed\", "
                f"or chown {euid} it and chmod 0400")
    return f"chown {euid} it and chmod 0400"


# -- symbolic links in the key's directories -------------------------------------

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
        dir_fd = open_trusted_directory(directory, path)
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


def open_trusted_directory(directory: bytes, path: StrOrBytesPath) -> int:
    """An O_PATH descriptor of `directory` (absolute), resolved as the kernel
    does but one component at a time, each relative to the descriptor of the
    one before (so nothing can be swapped between two steps), following only
    symbolic links that root or this uid owns.  `path` names the key in errors."""
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
            if link.st_uid not in (_ROOT, euid):
                owners = "root" if euid == _ROOT else f"root or uid {euid}"
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
