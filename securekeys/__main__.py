"""The command line: ``python -m securekeys`` / ``securekeys``.

create PATH [--size N] [--encoding E | --passphrase [--sensitive] | --kek KEKFILE]
                                          write a new random key file (0400, atomic, exclusive),
                                          plain or encrypted (securekeys.encrypted)
check PATH [--size N] [--trust T] [--beneath DIR] [--encoding E | --passphrase | --kek KEKFILE]
                                          run every read_key check on a key file (and decrypt it)
rewrap OLD NEW (--passphrase | --kek KEKFILE) (--new-passphrase [--sensitive] | --new-kek KEKFILE)
                                          write OLD's key to a new file under another secret
info                                      what protection keys get in this process

Passphrases are typed at the terminal (/dev/tty, echo off) into guarded memory;
a new one is typed twice.  Every secret is destroyed as soon as it has served.

Whatever happens, at most one line goes to stderr: an error is exit status 1
(2 for usage errors); Ctrl-C ends the process by SIGINT (status 130 in the
shell).  A reader that closes standard output early is not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import re
import signal
import stat
import sys
from collections.abc import Callable
from typing import NoReturn, cast

import securekeys
from securekeys import SecureBuffer, SecureKey, create_key, read_key, report, write_key
from securekeys._memory import _starts_encrypted, _text_lengths
from securekeys.crypto import (
    AEAD_KEY_BYTES,
    MEMLIMIT_MODERATE,
    MEMLIMIT_SENSITIVE,
    OPSLIMIT_MODERATE,
    OPSLIMIT_SENSITIVE,
    read_password,
)
from securekeys.encrypted import OVERHEAD_BYTES, Header, check_secret
from securekeys.errors import EncryptedKeyFileError, KeyFileError
from securekeys.files import check_key_file, fill_key_from_encrypted_file, fill_key_from_file
from securekeys.lookup import _symlink_refusal
from securekeys.trust import ENCODINGS, TRUST_POLICIES, Encoding, Trust, describe_access, text_length_words

DEFAULT_SIZE = 32
# A key, not a data file: room for any key format in use (RSA-16384, Classic
# McEliece secret keys near 14 KB), while a slip such as --size 100000000
# is refused before any memory is locked or anything is written.
MAX_SIZE = 64 * 1024


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is too large: a key is at most {MAX_SIZE} bytes (64 KiB)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="securekeys",
        description="Create, check and inspect key files kept out of ordinary memory.",
        epilog="example: securekeys create app.key && securekeys check app.key",
    )
    parser.add_argument("--version", action="version", version=f"securekeys {securekeys.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser("create", help="write a new random key file (mode 0400), plain or encrypted",
                                 description="Write a new random key to PATH: created exclusively "
                                 "(never replaces a file), mode 0400, fsynced, atomic.  With --passphrase "
                                 "or --kek the key is stored encrypted (SKEYENC1: the key's size + 88 bytes).",
                                 epilog="example: securekeys create /etc/myapp/app.key --size 32")
    check = commands.add_parser("check", help="verify a key file as read_key would",
                                description="Run every read_key check on PATH (regular file, "
                                "owner, permissions, hard links, symbolic links, exact size) "
                                "and say what was verified; with --passphrase or --kek, decrypt it too.  "
                                "When it refuses, the one line says which rule failed and the smallest "
                                "change that fixes it.",
                                epilog="example: securekeys check /etc/myapp/app.key --size 32")
    rewrap = commands.add_parser("rewrap", help="write an encrypted key file's key to a new file under another "
                                 "passphrase or key-encryption key",
                                 description="Decrypt OLD (its key's size is its length - 88) and write the "
                                 "key to NEW, a new file (never replaces one), encrypted under the new "
                                 "passphrase or key-encryption key.  OLD is left as it is: remove it "
                                 "yourself once NEW is in use.",
                                 epilog="example: securekeys rewrap app.key new.key --passphrase --new-kek kek.key")
    for command, size_help in ((create, "key size"), (check, "expected key size")):
        command.add_argument("path", metavar="PATH")
        command.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="N",
                             help=f"{size_help} in bytes, 1 to {MAX_SIZE} (default {DEFAULT_SIZE})")
        command.add_argument("--encoding", choices=ENCODINGS, default="raw",
                             help="the key as raw bytes (default) or as hex/base64/base64url text "
                             "with a final newline (plain key files only)")
    rewrap.add_argument("old", metavar="OLD")
    rewrap.add_argument("new", metavar="NEW")
    _secret_options(create, "", "encrypt the key under a passphrase typed twice at the terminal",
                    "encrypt the key under the 32-byte key in KEKFILE (a plain key file)", required=False)
    _secret_options(check, "", "decrypt the key with a passphrase typed at the terminal",
                    "decrypt the key with the 32-byte key in KEKFILE", required=False)
    _secret_options(rewrap, "", "OLD is encrypted under a passphrase, typed at the terminal",
                    "OLD is encrypted under the 32-byte key in KEKFILE", required=True)
    _secret_options(rewrap, "new-", "encrypt NEW under a new passphrase typed twice at the terminal",
                    "encrypt NEW under the 32-byte key in KEKFILE", required=True)
    for command in (create, rewrap):
        # One stronger preset rather than free limits: libsodium's two presets
        # for stored secrets are the choices worth making, and a file carries
        # its own limits, so reading never needs to be told.
        command.add_argument("--sensitive", action="store_true",
                             help="Argon2id at libsodium's SENSITIVE limits (opslimit 4, 1 GiB, a few seconds) "
                             "instead of MODERATE (opslimit 3, 256 MiB, about half a second)")
        command.set_defaults(subparser=command)
    check.add_argument("--trust", choices=TRUST_POLICIES, default="strict",
                       help="who may own the file: strict (default: this user only), root-managed "
                       "(or root, group read at most: Kubernetes fsGroup, Swarm), systemd "
                       "(or root with an ACL for this user: LoadCredential=)")
    check.add_argument("--beneath", metavar="DIR",
                       help="PATH is relative to DIR and resolved inside it: links that stay inside "
                       "are followed (Kubernetes' ..data), nothing leads out")
    check.set_defaults(subparser=check)
    commands.add_parser("info", help="show the protection keys get in this process",
                        description="Show libsodium's version, whether keys get mlocked, "
                        "RLIMIT_MEMLOCK, the core-dump limit and vm.max_map_count.",
                        epilog="example: securekeys info")
    return parser


def _secret_options(command: argparse.ArgumentParser, prefix: str, passphrase_help: str, kek_help: str,
                    *, required: bool) -> None:
    secret = command.add_mutually_exclusive_group(required=required)
    secret.add_argument(f"--{prefix}passphrase", action="store_true", help=passphrase_help)
    secret.add_argument(f"--{prefix}kek", metavar="KEKFILE", help=kek_help)


def _check_combinations(args: argparse.Namespace) -> None:
    """What argparse cannot say alone: options that only make sense together."""
    subparser: argparse.ArgumentParser | None = getattr(args, "subparser", None)
    if subparser is None:
        return
    encrypted = getattr(args, "passphrase", False) or getattr(args, "kek", None) is not None
    if encrypted and getattr(args, "encoding", "raw") != "raw":
        subparser.error("--encoding is for plain key files: an encrypted key file is binary")
    if getattr(args, "sensitive", False):
        option = "--new-passphrase" if args.command == "rewrap" else "--passphrase"
        if not getattr(args, option[2:].replace("-", "_")):
            subparser.error(f"--sensitive sets the Argon2id limits of {option}, which is not given")


def _create(args: argparse.Namespace) -> list[str]:
    encoding = cast(Encoding, args.encoding)
    if args.passphrase or args.kek is not None:
        return [_create_encrypted(args)]
    with create_key(args.size) as key:
        write_key(args.path, key, encoding=encoding)
    if encoding == "raw":
        return [f"{args.path}: wrote a new {args.size}-byte key (mode 0400)"]
    padded, _ = _text_lengths(args.size, encoding)
    return [f"{args.path}: wrote a new {args.size}-byte key as {encoding} text "
            f"({padded} characters and a newline, mode 0400)"]


def _create_encrypted(args: argparse.Namespace) -> str:
    _refuse_existing(args.path)   # before anyone types a passphrase for nothing
    opslimit, memlimit = _limits(args.sensitive)
    with contextlib.ExitStack() as secrets:
        passphrase, kek = _secret(secrets, args.passphrase, args.kek, args.path, new=True)
        with create_key(args.size) as key:
            _write_encrypted(args.path, key, passphrase, kek, opslimit, memlimit)
    return (f"{args.path}: wrote a new {args.size}-byte key encrypted under "
            f"{_under(args.passphrase, args.kek, opslimit, memlimit)}, "
            f"{args.size + OVERHEAD_BYTES} bytes, mode 0400")


def _rewrap(args: argparse.Namespace) -> list[str]:
    size = _encrypted_size(args.old, args.subparser)
    _refuse_existing(args.new)
    opslimit, memlimit = _limits(args.sensitive)
    with contextlib.ExitStack() as secrets:
        passphrase, kek = _secret(secrets, args.passphrase, args.kek, args.old, new=False)
        key = secrets.enter_context(read_key(args.old, size, passphrase=passphrase, kek=kek))
        # The old secret has served: gone before the new one is typed.
        for old in (passphrase, kek):
            if old is not None:
                old.destroy()
        passphrase, kek = _secret(secrets, args.new_passphrase, args.new_kek, args.new, new=True)
        _write_encrypted(args.new, key, passphrase, kek, opslimit, memlimit)
    return [f"{args.new}: wrote the {size}-byte key of {args.old} encrypted under "
            f"{_under(args.new_passphrase, args.new_kek, opslimit, memlimit)}, "
            f"{size + OVERHEAD_BYTES} bytes, mode 0400; {args.old} is unchanged"]


def _check(args: argparse.Namespace) -> list[str]:
    # Report what read_key verified on the open file (its fstat), without a
    # second look at the path, which could name another file by now.
    trust, encoding = cast(Trust, args.trust), cast(Encoding, args.encoding)
    key = SecureKey(args.size)
    if args.passphrase or args.kek is not None:
        with contextlib.ExitStack() as secrets:
            passphrase, kek = _secret(secrets, args.passphrase, args.kek, args.path, new=False)
            verified, header = _decrypt_file(key, args.path, trust, args.beneath, passphrase, kek)
    else:
        verified = fill_key_from_file(key, args.path, trust=trust, encoding=encoding, beneath=args.beneath)
    with key:
        locked = "locked" if key.locked else "NOT locked"
    if args.beneath is None:
        where = [f"{args.path}: OK",
                 "  a regular file with one name: not a symbolic link, no other hard link",
                 "  reached through no symbolic link that anyone but root or this user could have made"]
    else:
        where = [f"{os.path.join(args.beneath, args.path)}: OK",
                 "  a regular file with one name (no other hard link)",
                 f"  resolved beneath {args.beneath}: links inside it followed, none leading out of it "
                 "or onto another filesystem"]
    if args.passphrase or args.kek is not None:
        size = [f"  an encrypted {args.size}-byte key (SKEYENC1, {verified.st_size} bytes) under "
                f"{_under(args.passphrase, args.kek, header.opslimit, header.memlimit)}",
                f"  decrypted and authenticated into guarded memory ({locked})"]
    elif encoding == "raw":
        size = [f"  exactly {args.size} bytes, read into guarded memory ({locked})"]
    else:
        size = [f"  a {args.size}-byte key as {encoding} text: {text_length_words(args.size, encoding)}, "
                f"decoded into guarded memory ({locked})"]
    return where + [f"  {line}" for line in describe_access(verified, trust)] + size


# -- encrypted key files -----------------------------------------------------------

def _write_encrypted(path: str, key: SecureKey, passphrase: SecureBuffer | None, kek: SecureKey | None,
                     opslimit: int, memlimit: int) -> None:
    if passphrase is not None:
        write_key(path, key, passphrase=passphrase, opslimit=opslimit, memlimit=memlimit)
    else:
        write_key(path, key, kek=kek)   # Argon2's limits are a passphrase's alone


def _limits(sensitive: bool) -> tuple[int, int]:
    return (OPSLIMIT_SENSITIVE, MEMLIMIT_SENSITIVE) if sensitive else (OPSLIMIT_MODERATE, MEMLIMIT_MODERATE)


def _under(passphrase: bool, kek: str | None, opslimit: int, memlimit: int) -> str:
    if passphrase:
        return f"a passphrase (Argon2id opslimit {opslimit}, memlimit {_mebibytes(memlimit)})"
    return f"the key-encryption key in {kek}"


def _mebibytes(size: int) -> str:
    return f"{size >> 20} MiB" if size % (1 << 20) == 0 else f"{size} bytes"


def _refuse_existing(path: str) -> None:
    # write_key refuses too (O_EXCL, at the last moment); this only spares
    # the typing and the Argon2 work when the answer is known already.
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "refusing to replace an existing file", path)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "no such directory", directory)


def _encrypted_size(path: str, parser: argparse.ArgumentParser) -> int:
    """The size of the key in the encrypted key file at `path`, from its
    length, refused before any memory is locked or any passphrase typed
    when it cannot be one: too short, a key larger than MAX_SIZE (the bound
    --size has; a 300 MiB file would otherwise lock twice its size before
    being found out), or no SKEYENC at its start.  read_key then checks
    the file again on its own descriptor, this length included."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _symlink_refusal(path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            check_key_file(fd, path, 1, encrypted=True)   # raises: names what it is instead
        length = st.st_size
        if length <= OVERHEAD_BYTES:
            raise KeyFileError(errno.EINVAL, f"{length} bytes: too short for an encrypted key file (a key and "
                               f"{OVERHEAD_BYTES} bytes of header and tag; a plain key file?)", path)
        if length - OVERHEAD_BYTES > MAX_SIZE:
            parser.error(f"{_one_line(path)} has {length} bytes: if it is an encrypted key file, its key is "
                         f"{length - OVERHEAD_BYTES} bytes, and a key is at most {MAX_SIZE} bytes (64 KiB)")
        if not _starts_encrypted(fd):   # read into wiped C memory: a plain key's first bytes stay secret
            raise KeyFileError(errno.EINVAL, "not an encrypted key file: it does not start with SKEYENC1 "
                               "(a plain key file?)", path)
    finally:
        os.close(fd)
    return length - OVERHEAD_BYTES


def _secret(secrets: contextlib.ExitStack, passphrase: bool, kek_file: str | None, path: str,
            *, new: bool) -> tuple[SecureBuffer | None, SecureKey | None]:
    """The passphrase (typed; twice when `new`) or the KEK (read from
    `kek_file`) for the file at `path`, destroyed when `secrets` closes."""
    if kek_file is not None:
        try:
            kek = read_key(kek_file, AEAD_KEY_BYTES)
        except EncryptedKeyFileError:
            raise KeyFileError(errno.EINVAL, "is itself an encrypted key file: a key-encryption key is "
                               f"a plain {AEAD_KEY_BYTES}-byte key file", kek_file) from None
        return None, secrets.enter_context(kek)
    if not passphrase:
        return None, None
    shown = _one_line(path)
    typed = secrets.enter_context(_read_passphrase(f"{'New passphrase' if new else 'Passphrase'} for {shown}: "))
    if new:
        with _read_passphrase("Again: ") as again:
            same = typed == again   # constant time: both are secure buffers
        if not same:
            raise ValueError("the two passphrases differ: nothing was written")
    return typed, None


def _read_passphrase(prompt: str) -> SecureBuffer:
    try:
        return read_password(prompt)
    except OSError as error:
        if error.errno != errno.ENXIO or error.filename != "/dev/tty":
            raise
        raise OSError(error.errno, "a passphrase is typed at the terminal, and this process has none "
                      "(/dev/tty): use --kek where no one types") from None


def _decrypt_file(key: SecureKey, path: str, trust: Trust, beneath: str | None,
                  passphrase: SecureBuffer | None, kek: SecureKey | None) -> tuple[os.stat_result, Header]:
    """What read_key(path, passphrase= or kek=) does, into `key` (destroyed
    on error), keeping what it verified for the report: the open file's
    fstat and the file's header."""
    kind = check_secret(passphrase, kek)   # not 0: _check calls this with one of them
    secret = cast(SecureBuffer, passphrase if passphrase is not None else kek)
    return fill_key_from_encrypted_file(key, path, trust, beneath, kind, secret)


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def info_lines() -> list[str]:
    with SecureBuffer(1) as probe:
        locked = probe.locked
    del probe   # gone before the count of live buffers
    facts = report()
    memlock, core = facts["rlimit_memlock"], facts["core_limit"]
    return [
        f"libsodium version: {facts['libsodium_version']}",
        f"backend: {facts['backend']}",
        f"keys are mlocked: {'yes' if locked else 'NO (they may be swapped to disk)'}",
        f"lock policy: {facts['lock_policy']}",
        f"RLIMIT_MEMLOCK: soft {_limit(memlock[0])}, hard {_limit(memlock[1])} bytes",
        f"locked by securekeys: {facts['locked_bytes']} bytes of guarded pool memory reserved for keys "
        f"(guard pages included; {facts['pool_bytes']} bytes of free key slots kept for reuse), "
        "reserved by the probe that tested mlock above",
        f"live secure buffers: {facts['live_buffers']} ({facts['unlocked_buffers']} not locked)",
        f"core dump limit (RLIMIT_CORE): soft {_limit(core[0])}, hard {_limit(core[1])} bytes",
        f"dumpable: {'yes' if facts['dumpable'] else 'no'}",
        f"vm.max_map_count: {facts['max_map_count']} ({facts['mappings']} mappings in use)",
        f"swap: {facts['swap_total_kb']} kB",
    ]


_COMMANDS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "create": _create,
    "check": _check,
    "rewrap": _rewrap,
    "info": lambda args: info_lines(),
}


def main(argv: list[str] | None = None) -> int:
    try:
        _reserve_standard_fds()
        args = _parser().parse_args(argv)
        _check_combinations(args)
        try:
            lines = _COMMANDS[args.command](args)
        except (OSError, ValueError, TypeError, MemoryError, EOFError) as error:
            _say(f"error: {_describe(error)}")
            return 1
        return _print(lines, args.command)
    except KeyboardInterrupt:
        _say("interrupted")
        # Die of SIGINT rather than exit 130, as Python itself does: a shell
        # running us in a loop or script then stops too (status 130).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130   # only if SIGINT is blocked


def _print(lines: list[str], command: str) -> int:
    """The report of a command that did its job; a closed stdout does not undo it."""
    try:
        if sys.stdout is not None:   # None: started with stdout closed
            sys.stdout.write(_encodable("".join(f"{_one_line(line)}\n" for line in lines), sys.stdout))
            sys.stdout.flush()
    except OSError as error:
        # Nothing more can reach stdout; point it at /dev/null so that the
        # interpreter's last flush at exit has nothing to complain about.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        if error.errno == errno.EPIPE:
            return 0   # the reader stopped reading: its choice, not our failure
        _say(f"error: standard output: {error.strerror} (the {command} itself succeeded)")
        return 1
    return 0


def _say(message: str) -> None:
    line = f"securekeys: {_one_line(message)}\n"
    with contextlib.suppress(OSError, ValueError, AttributeError):   # stderr may be gone too
        if sys.stderr is not None:
            sys.stderr.write(_encodable(line, sys.stderr))
            sys.stderr.flush()
        elif sys.__stderr__ is not None:
            # sys.stderr set to None by whoever runs us, with fd 2 still
            # the process's stderr: write there, never to stdout (print's
            # fallback for file=None), which may be a pipe carrying a key.
            os.write(sys.__stderr__.fileno(), line.encode(sys.__stderr__.encoding, "backslashreplace"))
        # Otherwise Python started with fd 2 closed: there is no stderr, and
        # whatever holds fd 2 now is not one; the exit status alone tells.


def _encodable(text: str, stream: object) -> str:
    """`text` as `stream`'s encoding can write it: a path (or a typed
    argument) that PYTHONIOENCODING=ascii or a C locale cannot represent is
    written with backslash escapes, where a strict encoder would raise
    UnicodeEncodeError and turn the one line into a traceback."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except (LookupError, UnicodeError):   # an encoding that cannot even do that
        return text.encode("ascii", "backslashreplace").decode("ascii")


def _reserve_standard_fds() -> None:
    """Point a closed fd 0, 1 or 2 at /dev/null before anything is opened.
    Started with one closed, the first file opened takes its number: a key
    file being written, or a key-encryption key, would then be what a
    stray write to "stderr" (a C library's message, the fatal path's one
    line) lands in."""
    for fd, flags in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, flags | os.O_CLOEXEC)
                if null != fd:
                    os.dup2(null, fd, inheritable=False)
                    os.close(null)


def _one_line(text: str) -> str:
    """`text` with every character that could start a new line (or hide one) escaped:
    a path or a link target may hold "\n" and fake a line of our output."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line too, with where to look."""

    def error(self, message: str) -> NoReturn:
        _say(f"usage error: {message} (see {self.prog} --help)")
        sys.exit(2)


# A refusal names the library's keyword (trust="root-managed", beneath='/etc/tls',
# size=32, "pass passphrase="); here it is an option.
_KEYWORD = re.compile(r"""\b(trust|encoding|beneath|size|passphrase|kek)=(?:(["'])(.*?)\2|(\d+))?""")


def _as_option(match: re.Match[str]) -> str:
    if match[2]:
        return f"--{match[1]} {match[3]}"
    return f"--{match[1]} {match[4]}" if match[4] else f"--{match[1]}"


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f"{os.fsdecode(error.filename)}: " if error.filename is not None else ""
        return f"{where}{_KEYWORD.sub(_as_option, error.strerror)}"
    return _KEYWORD.sub(_as_option, str(error))


if __name__ == "__main__":
    sys.exit(main())
