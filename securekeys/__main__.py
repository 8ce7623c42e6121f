"""The command line: ``python -m securekeys`` / ``securekeys``.

create PATH [--size N] [--encoding E]     write a new random key file (0400, atomic, exclusive)
check PATH [--size N] [--trust T] [--encoding E] [--beneath DIR]
                                          run every read_key check on a key file
info                                      what protection keys get in this process

Whatever happens, at most one line goes to stderr: an error is exit status 1
(2 for usage errors); Ctrl-C ends the process by SIGINT (status 130 in the
shell).  A reader that closes standard output early is not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, cast

import securekeys
from securekeys import SecureBuffer, SecureKey, create_key, report, write_key
from securekeys._memory import _text_lengths
from securekeys.files import fill_key_from_file
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
    create = commands.add_parser("create", help="write a new random key file (mode 0400)",
                                 description="Write a new random key to PATH: created exclusively "
                                 "(never replaces a file), mode 0400, fsynced, atomic.",
                                 epilog="example: securekeys create /etc/myapp/app.key --size 32")
    check = commands.add_parser("check", help="verify a key file as read_key would",
                                description="Run every read_key check on PATH (regular file, "
                                "owner, permissions, hard links, symbolic links, exact size) "
                                "and say what was verified.  When it refuses, the one line says "
                                "which rule failed and the smallest change that fixes it.",
                                epilog="example: securekeys check /etc/myapp/app.key --size 32")
    for command, size_help in ((create, "key size"), (check, "expected key size")):
        command.add_argument("path", metavar="PATH")
        command.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="N",
                             help=f"{size_help} in bytes, 1 to {MAX_SIZE} (default {DEFAULT_SIZE})")
        command.add_argument("--encoding", choices=ENCODINGS, default="raw",
                             help="the key as raw bytes (default) or as hex/base64/base64url text "
                             "with a final newline")
    check.add_argument("--trust", choices=TRUST_POLICIES, default="strict",
                       help="who may own the file: strict (default: this user only), root-managed "
                       "(or root, group read at most: Kubernetes fsGroup, Swarm), systemd "
                       "(or root with an ACL for this user: LoadCredential=)")
    check.add_argument("--beneath", metavar="DIR",
                       help="PATH is relative to DIR and resolved inside it: links that stay inside "
                       "are followed (Kubernetes' ..data), nothing leads out")
    commands.add_parser("info", help="show the protection keys get in this process",
                        description="Show libsodium's version, whether keys get mlocked, "
                        "RLIMIT_MEMLOCK, the core-dump limit and vm.max_map_count.",
                        epilog="example: securekeys info")
    return parser


def _create(args: argparse.Namespace) -> list[str]:
    encoding = cast(Encoding, args.encoding)
    with create_key(args.size) as key:
        write_key(args.path, key, encoding=encoding)
    if encoding == "raw":
        return [f"{args.path}: wrote a new {args.size}-byte key (mode 0400)"]
    padded, _ = _text_lengths(args.size, encoding)
    return [f"{args.path}: wrote a new {args.size}-byte key as {encoding} text "
            f"({padded} characters and a newline, mode 0400)"]


def _check(args: argparse.Namespace) -> list[str]:
    # Report what read_key verified on the open file (its fstat), without a
    # second look at the path, which could name another file by now.
    trust, encoding = cast(Trust, args.trust), cast(Encoding, args.encoding)
    key = SecureKey(args.size)
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
    if encoding == "raw":
        size = f"  exactly {args.size} bytes, read into guarded memory ({locked})"
    else:
        size = (f"  a {args.size}-byte key as {encoding} text: {text_length_words(args.size, encoding)}, "
                f"decoded into guarded memory ({locked})")
    return where + [f"  {line}" for line in describe_access(verified, trust)] + [size]


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
    "info": lambda args: info_lines(),
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        try:
            lines = _COMMANDS[args.command](args)
        except (OSError, ValueError, TypeError, MemoryError) as error:
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
            sys.stdout.write("".join(f"{_one_line(line)}\n" for line in lines))
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
    with contextlib.suppress(OSError, ValueError, AttributeError):   # stderr may be gone too
        print(f"securekeys: {_one_line(message)}", file=sys.stderr, flush=True)


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
# "as beneath="); here it is an option.
_KEYWORD = re.compile(r"""\b(trust|encoding|beneath)=(?:(["'])(.*?)\2)?""")


def _as_option(match: re.Match[str]) -> str:
    return f"--{match[1]} {match[3]}" if match[2] else f"--{match[1]}"


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f"{os.fsdecode(error.filename)}: " if error.filename is not None else ""
        return f"{where}{_KEYWORD.sub(_as_option, error.strerror)}"
    return _KEYWORD.sub(_as_option, str(error))


if __name__ == "__main__":
    sys.exit(main())
