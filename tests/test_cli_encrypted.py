"""The command line on encrypted key files: passphrases typed at a real pty,
KEK files, real subprocesses, and nothing left behind on any error.

Files the CLI only reads are made here with Argon2id's smallest limits (the
file carries its limits, so reading them is cheap); only `create
--passphrase` and `rewrap --new-passphrase` pay the MODERATE cost (about half
a second and 256 MiB each), so few tests do.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from conftest import drain_pty
from securekeys import SecureBuffer, SecureKey, create_key, read_key, write_key
from securekeys.crypto import (
    MEMLIMIT_MIN,
    MEMLIMIT_MODERATE,
    MEMLIMIT_SENSITIVE,
    OPSLIMIT_MIN,
    OPSLIMIT_MODERATE,
    OPSLIMIT_SENSITIVE,
)

from test_cli import cli
from test_files import SIZE, make_file

SECRET = b"correct horse battery staple"


def secure(data: bytes) -> SecureBuffer:
    buffer = SecureBuffer(len(data))
    with buffer.writing() as view:
        view[:] = data
    return buffer


def passphrase_file(path: Path, passphrase: bytes = SECRET) -> SecureKey:
    """A new key written under `passphrase` with the smallest Argon2id limits; the key."""
    key = create_key(SIZE)
    with secure(passphrase) as typed:
        write_key(path, key, passphrase=typed, opslimit=OPSLIMIT_MIN, memlimit=MEMLIMIT_MIN)
    return key


def kek_file(path: Path, kek: Path) -> SecureKey:
    key = create_key(SIZE)
    with read_key(kek, 32) as secret:
        write_key(path, key, kek=secret)
    return key


def limits(path: Path) -> tuple[int, int]:
    """The Argon2id opslimit and memlimit in a file's header (offsets 16 and 24)."""
    opslimit, memlimit = struct.unpack_from("<QQ", path.read_bytes(), 16)
    return opslimit, memlimit


def cli_at_terminal(args: list[str], answers: list[tuple[bytes, bytes]],
                    cwd: Path) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """The CLI with a new pty as its controlling terminal (read_password opens
    /dev/tty) and stdout/stderr as pipes; each answer is typed once its
    prompt shows.  Returns the result and all that the terminal displayed."""
    master, slave = os.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "securekeys", *args], cwd=cwd, text=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, pass_fds=(slave,),
            # A session leader that opens no terminal gets one only this way.
            preexec_fn=lambda: fcntl.ioctl(slave, termios.TIOCSCTTY, 0))
    finally:
        os.close(slave)   # the child's copy keeps the pty alive until it exits
    shown, after = b"", 0
    try:
        for prompt, typed in answers:
            while (found := shown.find(prompt, after)) < 0:
                ready, _, _ = select.select([master], [], [], 60)
                if not ready:
                    child.kill()
                    pytest.fail(f"no prompt {prompt!r}; the terminal showed {shown!r}")
                try:
                    chunk = os.read(master, 4096)
                except OSError:   # EIO: the child has gone
                    chunk = b""
                if not chunk:
                    break
                shown += chunk
            if found < 0:
                break   # gone before this prompt: the caller looks at why
            os.write(master, typed)
            after = found + len(prompt)
        out, err = child.communicate(timeout=120)
        shown += drain_pty(master)
        echo = bool(termios.tcgetattr(master)[3] & termios.ECHO)
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
            child.wait()
    assert echo, "echo was left off"
    return subprocess.CompletedProcess(child.args, child.returncode, out, err), shown


def test_create_with_a_passphrase_typed_twice(private_dir: Path) -> None:
    path = private_dir / "k"
    done, shown = cli_at_terminal(["create", "k", "--passphrase"], [(b"New passphrase for k: ", SECRET + b"\n"),
                                                    (b"Again: ", SECRET + b"\n")], private_dir)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout == ("k: wrote a new 32-byte key encrypted under a passphrase (Argon2id opslimit "
                           f"{OPSLIMIT_MODERATE}, memlimit {MEMLIMIT_MODERATE >> 20} MiB), 120 bytes, mode 0400\n")
    assert SECRET not in shown   # typed with echo off
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400 and os.path.getsize(path) == SIZE + 88
    assert limits(path) == (OPSLIMIT_MODERATE, MEMLIMIT_MODERATE)
    with secure(SECRET) as typed, read_key(path, SIZE, passphrase=typed) as key:
        assert key.size == SIZE


def test_sensitive_sets_the_stronger_limits(private_dir: Path) -> None:
    done, _ = cli_at_terminal(["create", "k", "--passphrase", "--sensitive"], [(b"for k: ", b"x\n"), (b"Again: ", b"x\n")],
                              private_dir)
    assert done.returncode == 0, done
    assert f"(Argon2id opslimit {OPSLIMIT_SENSITIVE}, memlimit 1024 MiB)" in done.stdout
    assert limits(private_dir / "k") == (OPSLIMIT_SENSITIVE, MEMLIMIT_SENSITIVE)


@pytest.mark.parametrize("second, message, status", [
    (SECRET + b"!\n", "securekeys: error: the two passphrases differ: nothing was written\n", 1),
    (b"\x03", "securekeys: interrupted\n", -signal.SIGINT),   # Ctrl-C at the second prompt
    (b"\x04", "securekeys: error: end of file on the terminal before a password\n", 1),   # Ctrl-D
])
def test_no_file_unless_the_passphrase_is_typed_twice(private_dir: Path, second: bytes, message: str,
                                                       status: int) -> None:
    done, _ = cli_at_terminal(["create", "k", "--passphrase"], [(b"for k: ", SECRET + b"\n"), (b"Again: ", second)], private_dir)
    assert (done.returncode, done.stdout, done.stderr) == (status, "", message)
    assert os.listdir(private_dir) == []


def test_an_empty_passphrase_is_refused(private_dir: Path) -> None:
    done, _ = cli_at_terminal(["create", "k", "--passphrase"], [(b"for k: ", b"\n")], private_dir)
    assert (done.returncode, done.stderr) == (1, "securekeys: error: no password was entered\n")
    assert os.listdir(private_dir) == []


def test_check_with_the_passphrase(private_dir: Path) -> None:
    passphrase_file(private_dir / "k").destroy()
    done, _ = cli_at_terminal(["check", "k", "--passphrase"], [(b"Passphrase for k: ", SECRET + b"\n")], private_dir)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.splitlines() == [
        "k: OK",
        "  a regular file with one name: not a symbolic link, no other hard link",
        "  reached through no symbolic link that anyone but root or this user could have made",
        f"  owned by uid {os.geteuid()} (this process's effective uid)",
        "  mode 0400: no group or other permissions",
        f"  an encrypted 32-byte key (SKEYENC1, 120 bytes) under a passphrase (Argon2id opslimit {OPSLIMIT_MIN}, "
        f"memlimit {MEMLIMIT_MIN} bytes)",
        "  decrypted and authenticated into guarded memory (locked)",
    ]


def test_check_with_a_wrong_passphrase(private_dir: Path) -> None:
    passphrase_file(private_dir / "k").destroy()
    done, _ = cli_at_terminal(["check", "k", "--passphrase"], [(b"for k: ", b"wrong\n")], private_dir)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("securekeys: error: cannot decrypt the key file 'k': a wrong passphrase, or the file "
                           "was changed (every byte is authenticated)\n")


def test_create_and_check_under_a_kek(private_dir: Path) -> None:
    assert cli("create", "kek", cwd=private_dir).returncode == 0
    done = cli("create", "k", "--kek", "kek", "--size", "64", cwd=private_dir)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "k: wrote a new 64-byte key encrypted under the key-encryption key in kek, 152 bytes, mode 0400\n"
    assert limits(private_dir / "k") == (0, 0)
    checked = cli("check", "k", "--kek", "kek", "--size", "64", cwd=private_dir)
    assert checked.returncode == 0 and checked.stderr == ""
    assert checked.stdout.splitlines()[-2:] == [
        "  an encrypted 64-byte key (SKEYENC1, 152 bytes) under the key-encryption key in kek",
        "  decrypted and authenticated into guarded memory (locked)"]
    beneath = cli("check", "k", "--beneath", str(private_dir), "--kek", "kek", "--size", "64", cwd=private_dir)
    assert beneath.returncode == 0 and beneath.stdout.splitlines()[0] == f"{private_dir}/k: OK", beneath
    assert cli("create", "other", cwd=private_dir).returncode == 0
    wrong = cli("check", "k", "--kek", "other", "--size", "64", cwd=private_dir)
    assert (wrong.returncode, wrong.stdout) == (1, "")
    assert wrong.stderr == ("securekeys: error: cannot decrypt the key file 'k': a wrong key-encryption key, "
                            "or the file was changed (every byte is authenticated)\n")


def test_rewrap_a_passphrase_file_under_a_kek(private_dir: Path) -> None:
    key = passphrase_file(private_dir / "old")
    old = (private_dir / "old").read_bytes()
    make_file(private_dir / "kek", os.urandom(32))
    done, _ = cli_at_terminal(["rewrap", "old", "new", "--passphrase", "--new-kek", "kek"],
                              [(b"Passphrase for old: ", SECRET + b"\n")], private_dir)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout == ("new: wrote the 32-byte key of old encrypted under the key-encryption key in kek, "
                           "120 bytes, mode 0400; old is unchanged\n")
    with read_key(private_dir / "kek", 32) as kek, read_key(private_dir / "new", SIZE, kek=kek) as new:
        assert new == key
    assert (private_dir / "old").read_bytes() == old
    assert stat.S_IMODE(os.stat(private_dir / "new").st_mode) == 0o400


def test_rewrap_a_kek_file_under_a_new_passphrase(private_dir: Path) -> None:
    make_file(private_dir / "kek", os.urandom(32))
    key = kek_file(private_dir / "old", private_dir / "kek")
    done, shown = cli_at_terminal(["rewrap", "old", "new", "--kek", "kek", "--new-passphrase"],
                                  [(b"New passphrase for new: ", SECRET + b"\n"), (b"Again: ", SECRET + b"\n")],
                                  private_dir)
    assert done.returncode == 0 and done.stderr == "", done
    assert b"Passphrase for old" not in shown
    assert limits(private_dir / "new") == (OPSLIMIT_MODERATE, MEMLIMIT_MODERATE)
    with secure(SECRET) as typed, read_key(private_dir / "new", SIZE, passphrase=typed) as new:
        assert new == key


def test_rewrap_with_a_wrong_old_passphrase_asks_nothing_more(private_dir: Path) -> None:
    passphrase_file(private_dir / "old").destroy()
    make_file(private_dir / "kek", os.urandom(32))
    before = sorted(os.listdir(private_dir))
    done, shown = cli_at_terminal(["rewrap", "old", "new", "--passphrase", "--new-passphrase"],
                                  [(b"for old: ", b"wrong\n")], private_dir)
    assert done.returncode == 1 and done.stderr.startswith("securekeys: error: cannot decrypt the key file 'old'")
    assert b"New passphrase" not in shown
    assert sorted(os.listdir(private_dir)) == before


@pytest.mark.parametrize("new_secret", [["--new-kek", "kek"], ["--new-passphrase"]])
def test_rewrap_never_replaces_and_asks_nothing(private_dir: Path, new_secret: list[str]) -> None:
    make_file(private_dir / "kek", os.urandom(32))
    kek_file(private_dir / "old", private_dir / "kek").destroy()
    make_file(private_dir / "new", b"precious", 0o600)
    # No terminal at all: the refusal comes before any prompt.
    done = cli("rewrap", "old", "new", "--kek", "kek", *new_secret, cwd=private_dir, start_new_session=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "securekeys: error: new: refusing to replace an existing file\n"
    assert (private_dir / "new").read_bytes() == b"precious"
    assert stat.S_IMODE(os.stat(private_dir / "new").st_mode) == 0o600


@pytest.mark.parametrize("args, message", [
    (["check", "k", "--kek", "kek"], "k: a plain 32-byte key file, not an encrypted one: "
                                     "read it without --passphrase or --kek"),
    (["check", "enc"], "enc: an encrypted key file (it starts with SKEYENC) of a 32-byte key if it is whole: "
                       "pass --passphrase or --kek"),
    (["check", "enc", "--size", "16"], "enc: an encrypted key file (it starts with SKEYENC) of a 32-byte key if "
                                       "it is whole: pass --passphrase or --kek, and --size 32"),
    (["check", "enc", "--kek", "short"], "short: wrong size: expected 32 bytes, the file has 16"),
    (["check", "pass", "--kek", "kek"], "pass: encrypted under a passphrase: pass --passphrase, not --kek"),
    (["check", "enc", "--kek", "missing"], "missing: No such file or directory"),
    (["rewrap", "k", "new", "--kek", "kek", "--new-kek", "kek"],
     "k: 32 bytes: too short for an encrypted key file (a key and 88 bytes of header and tag; a plain key file?)"),
    (["rewrap", "missing", "new", "--kek", "kek", "--new-kek", "kek"], "missing: No such file or directory"),
    (["rewrap", "enc", "new", "--kek", "k", "--new-kek", "kek"], "cannot decrypt the key file 'enc': a wrong "
     "key-encryption key, or the file was changed (every byte is authenticated)"),
    (["create", "k", "--kek", "kek"], "k: refusing to replace an existing file"),
    (["create", "new", "--kek", "short"], "short: wrong size: expected 32 bytes, the file has 16"),
    (["create", "new", "--kek", "enc"], "enc: is itself an encrypted key file: a key-encryption key is a plain "
                                        "32-byte key file"),
    (["create", "nodir/new", "--kek", "kek"], "nodir: no such directory"),
    (["create", "nodir/new", "--passphrase"], "nodir: no such directory"),   # before any prompt
])
def test_errors_are_one_line_and_write_nothing(private_dir: Path, args: list[str], message: str) -> None:
    make_file(private_dir / "k", os.urandom(SIZE))
    make_file(private_dir / "kek", os.urandom(32))
    make_file(private_dir / "short", os.urandom(16))
    kek_file(private_dir / "enc", private_dir / "kek").destroy()
    passphrase_file(private_dir / "pass").destroy()
    before = sorted(os.listdir(private_dir))
    done = cli(*args, cwd=private_dir)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"securekeys: error: {message}\n"
    assert sorted(os.listdir(private_dir)) == before


def test_a_passphrase_without_a_terminal_is_one_line(private_dir: Path) -> None:
    done = cli("create", "k", "--passphrase", cwd=private_dir, start_new_session=True)
    assert done.returncode == 1
    assert done.stderr == ("securekeys: error: a passphrase is typed at the terminal, and this process has none "
                           "(/dev/tty): use --kek where no one types\n")
    assert os.listdir(private_dir) == []


@pytest.mark.parametrize("args", [
    ["create", "k", "--passphrase", "--kek", "f"],
    ["check", "k", "--passphrase", "--kek", "f"],
    ["rewrap", "a", "b", "--kek", "f"],
    ["rewrap", "a", "b", "--new-kek", "f"],
    ["rewrap", "a", "--kek", "f", "--new-kek", "f"],
    ["rewrap", "a", "b", "--passphrase", "--kek", "f", "--new-kek", "f"],
    ["rewrap", "a", "b", "--kek", "f", "--new-passphrase", "--new-kek", "f"],
    ["create", "k", "--sensitive"],
    ["create", "k", "--kek", "f", "--sensitive"],
    ["rewrap", "a", "b", "--passphrase", "--new-kek", "f", "--sensitive"],
    ["create", "k", "--kek", "f", "--encoding", "hex"],
    ["check", "k", "--passphrase", "--encoding", "base64"],
    ["rewrap", "a", "b", "--kek", "f", "--new-kek", "f", "--size", "32"],
])
def test_usage_errors(private_dir: Path, args: list[str]) -> None:
    done = cli(*args, cwd=private_dir)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("securekeys: usage error: ") and done.stderr.count("\n") == 1
    assert done.stderr.endswith("--help)\n")
    assert os.listdir(private_dir) == []


def test_rewrap_help_shows_an_example() -> None:
    done = cli("rewrap", "--help")
    assert done.returncode == 0
    assert "example: securekeys rewrap app.key new.key --passphrase --new-kek kek.key" in done.stdout


# -- rewrap's size: bounded before anything is locked --------------------------------

MEASURED_CLI = """
import runpy, sys
def peak() -> dict[str, int]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {name: int(fields[name].split()[0]) for name in ("VmHWM", "VmPeak", "VmLck")}
sys.argv = ["securekeys", *sys.argv[1:]]
try:
    runpy.run_module("securekeys", run_name="__main__", alter_sys=True)
finally:
    import securekeys
    with open("measured", "w") as out:   # the report of the dying process, stdout untouched
        out.write(repr((peak(), securekeys.report()["locked_bytes"])))
"""


def measured_rewrap(cwd: Path, old: str) -> tuple[subprocess.CompletedProcess[str], dict[str, int], int]:
    done = subprocess.run([sys.executable, "-c", MEASURED_CLI, "rewrap", old, "new", "--kek", "kek",
                           "--new-kek", "kek"], capture_output=True, text=True, cwd=cwd, timeout=120,
                          start_new_session=True)   # no terminal: nothing may prompt
    peak, locked = eval((cwd / "measured").read_text())
    (cwd / "measured").unlink()
    return done, peak, locked


def test_rewrap_of_a_huge_file_is_refused_before_anything_is_locked(private_dir: Path) -> None:
    # Before: a 300 MiB file that holds no key was read into 600 MiB of
    # guarded memory (the key and the file's contents) before "not an
    # encrypted key file".  Now fstat refuses it: a usage error, as --size is.
    make_file(private_dir / "kek", os.urandom(32))
    make_file(private_dir / "small", b"x" * 200)   # the baseline: the same run, refused after one look
    base, base_peak, _ = measured_rewrap(private_dir, "small")
    assert base.returncode == 1 and "not an encrypted key file" in base.stderr, base
    big = private_dir / "big"
    with open(os.open(big, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "wb") as f:
        f.truncate(300 << 20)   # sparse: reading it would fill every page
    done, peak, locked = measured_rewrap(private_dir, "big")
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr == (f"securekeys: usage error: big has {300 << 20} bytes: if it is an encrypted key file, "
                           f"its key is {(300 << 20) - 88} bytes, and a key is at most 65536 bytes (64 KiB) "
                           "(see securekeys rewrap --help)\n")
    # Resident and mapped memory as the baseline's, give or take 16 MiB; nothing of it locked for a key.
    assert peak["VmHWM"] < base_peak["VmHWM"] + 16 * 1024, (peak, base_peak)
    assert peak["VmPeak"] < base_peak["VmPeak"] + 16 * 1024, (peak, base_peak)
    assert peak["VmLck"] <= base_peak["VmLck"] and locked <= base_peak["VmLck"] * 1024 + 65536, (peak, locked)
    assert not (private_dir / "new").exists()


def test_rewrap_refuses_a_key_check_would_call_too_large(private_dir: Path) -> None:
    # Before: a 100,000-byte key was rewrapped into a file `check` then refused.
    make_file(private_dir / "kek", os.urandom(32))
    make_file(private_dir / "old", b"SKEYENC1" + bytes(100_000 + 80))
    done = cli("rewrap", "old", "new", "--kek", "kek", "--new-kek", "kek", cwd=private_dir,
               start_new_session=True)
    assert (done.returncode, done.stdout) == (2, "") and "a key is at most 65536 bytes" in done.stderr, done
    assert done.stderr.count("\n") == 1 and not (private_dir / "new").exists()


def test_rewrap_of_a_plain_file_is_refused_before_any_prompt(private_dir: Path) -> None:
    make_file(private_dir / "plain", os.urandom(1000))
    # --passphrase with no terminal: had it asked, this would be the /dev/tty error.
    done = cli("rewrap", "plain", "new", "--passphrase", "--new-passphrase", cwd=private_dir,
               start_new_session=True)
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr == ("securekeys: error: plain: not an encrypted key file: it does not start with SKEYENC1 "
                           "(a plain key file?)\n")


def test_rewrap_at_the_largest_size(private_dir: Path) -> None:
    make_file(private_dir / "kek", os.urandom(32))
    big = create_key(65536)
    write_key(private_dir / "big", big, kek=read_key(private_dir / "kek", 32))
    done = cli("rewrap", "big", "new", "--kek", "kek", "--new-kek", "kek", cwd=private_dir)
    assert done.returncode == 0, done
    assert read_key(private_dir / "new", 65536, kek=read_key(private_dir / "kek", 32)) == big
