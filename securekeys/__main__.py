"""The command line: ``python -m securekeys`` / ``securekeys``.

create PATH [--size N]   write a new random key file (0400, atomic, exclusive)
check PATH [--size N]    run every read_key check on a key file
info                     what protection keys get in this process

Errors are one line on stderr and exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import stat
import sys

from securekeys import SecureBuffer, SecureKey, create_key, report, write_key
from securekeys.files import fill_key_from_file

DEFAULT_SIZE = 32


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="securekeys",
        description="Create, check and inspect key files kept out of ordinary memory.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser("create", help="write a new random key file (mode 0400)",
                                 description="Write a new random key to PATH: created exclusively "
                                 "(never replaces a file), mode 0400, fsynced, atomic.")
    check = commands.add_parser("check", help="verify a key file as read_key would",
                                description="Run every read_key check on PATH (regular file, "
                                "owner, permissions, exact size) and say what was verified.")
    for command, size_help in ((create, "key size"), (check, "expected key size")):
        command.add_argument("path", metavar="PATH")
        command.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="N",
                             help=f"{size_help} in bytes (default {DEFAULT_SIZE})")
    commands.add_parser("info", help="show the protection keys get in this process",
                        description="Show libsodium's version, whether keys get mlocked, "
                        "RLIMIT_MEMLOCK, the core-dump limit and vm.max_map_count.")
    return parser


def _create(path: str, size: int) -> None:
    with create_key(size) as key:
        write_key(path, key)
    print(f"{path}: wrote a new {size}-byte key (mode 0400)")


def _check(path: str, size: int) -> None:
    # Report what read_key verified on the open file (its fstat), without a
    # second look at the path, which could name another file by now.
    key = SecureKey(size)
    verified = fill_key_from_file(key, path)
    with key:
        print(f"{path}: OK")
        print("  not a symbolic link; a regular file")
        print(f"  owned by uid {verified.st_uid} (this process's effective uid)")
        print(f"  mode {stat.S_IMODE(verified.st_mode):#o}: no group or other permissions")
        print(f"  exactly {size} bytes, read into guarded memory ({'locked' if key.locked else 'NOT locked'})")


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
        f"locked by securekeys: {facts['locked_bytes']} bytes",
        f"live secure buffers: {facts['live_buffers']} ({facts['unlocked_buffers']} not locked)",
        f"core dump limit (RLIMIT_CORE): soft {_limit(core[0])}, hard {_limit(core[1])} bytes",
        f"dumpable: {'yes' if facts['dumpable'] else 'no'}",
        f"vm.max_map_count: {facts['max_map_count']} ({facts['mappings']} mappings in use)",
        f"swap: {facts['swap_total_kb']} kB",
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "create":
            _create(args.path, args.size)
        elif args.command == "check":
            _check(args.path, args.size)
        else:
            print("\n".join(info_lines()))
    except (OSError, ValueError, TypeError, MemoryError) as error:
        print(f"securekeys: error: {_describe(error)}", file=sys.stderr)
        return 1
    return 0


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename is not None else ""
        return f"{where}{error.strerror}"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
