"""Signals at a passphrase prompt and around write_key's last system calls.

- Echo is off while a passphrase is typed: Ctrl-Z then `fg` must not show
  what is typed after `fg` (the shell turns echo back on when the job
  stops), and Ctrl-\\, SIGTERM or SIGHUP must not leave the terminal
  without echo.
- A signal handler that raises as write_key's last close(2) returns: either
  write_key returned with the file in place, or it raised and left nothing.
- read_password takes a passphrase of exactly PASSWORD_MAX_BYTES.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from conftest import drain_pty, run_python
from test_crypto import run_in_pty
from test_encrypted import INTERRUPT_AT_RETURN

ROOT = Path(__file__).resolve().parent.parent


# -- helpers ----------------------------------------------------------------

def _spawn_cli(args: list[str], cwd: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The CLI with a new pty as its controlling terminal; (child, master)."""
    master, slave = os.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "securekeys", *args], cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, pass_fds=(slave,),
            preexec_fn=lambda: fcntl.ioctl(slave, termios.TIOCSCTTY, 0))
    finally:
        os.close(slave)
    return child, master


def _read_until(master: int, wanted: bytes, shown: bytes = b"", timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while wanted not in shown:
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"no {wanted!r}; the terminal showed {shown!r}")
        try:
            chunk = os.read(master, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            pytest.fail(f"terminal closed before {wanted!r}; it showed {shown!r}")
        shown += chunk
    return shown


def _echo(master: int) -> bool:
    return bool(termios.tcgetattr(master)[3] & termios.ECHO)


# -- echo off at the prompt, whatever signal comes -------------------------------------

@pytest.mark.parametrize("how", ["ctrl-backslash", "SIGTERM", "SIGHUP"])
def test_echo_restored_when_killed_at_the_prompt(tmp_path: Path, how: str) -> None:
    # Ctrl-\ is a key the user types like Ctrl-C (ISIG stays on); SIGTERM and
    # SIGHUP are what a logout, `kill` or a closing terminal window send.
    child, master = _spawn_cli(["create", "k", "--passphrase"], tmp_path)
    try:
        _read_until(master, b"New passphrase for k: ")
        time.sleep(0.3)   # inside read_password's poll loop, echo off
        if how == "ctrl-backslash":
            os.write(master, b"\x1c")
        else:
            child.send_signal(getattr(signal, how))
        child.communicate(timeout=60)
        assert os.listdir(tmp_path) == []
        assert _echo(master), f"{how} at the passphrase prompt left the terminal's echo off"
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
            child.wait()


def test_ctrl_z_then_fg_does_not_echo_the_passphrase(tmp_path: Path) -> None:
    # An interactive bash restores its own terminal modes (echo on) when its
    # foreground job stops, and `fg` does not give the job its modes back:
    # a program that turned echo off must turn it off again on SIGCONT
    # (as OpenSSH's readpassphrase does).
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    pid, master = pty.fork()
    if pid == 0:   # pragma: no cover - the child: an interactive shell
        try:
            os.chdir(tmp_path)
            os.execve(bash, [bash, "--norc", "--noprofile", "-i"],
                      {"PATH": os.environ["PATH"], "PS1": "SH$ ", "TERM": "dumb", "HOME": str(tmp_path),
                       "PYTHONPATH": str(ROOT)})
        finally:
            os._exit(127)
    try:
        shown = _read_until(master, b"SH$ ")
        os.write(master, f"{sys.executable} -m securekeys create k --passphrase\n".encode())
        shown = _read_until(master, b"New passphrase for k: ", shown)
        time.sleep(0.5)
        os.write(master, b"\x1a")                        # Ctrl-Z
        shown = _read_until(master, b"SH$ ", shown[shown.index(b"New passphrase"):])
        os.write(master, b"fg\n")
        shown = _read_until(master, b"create k --passphrase\r\n", shown)   # fg names the job
        time.sleep(1.0)                                  # the job runs again, in read_password
        os.write(master, b"hunter2-typed-after-fg\n")
        time.sleep(1.0)
        os.write(master, b"\x03")                        # Ctrl-C at "Again:"
        time.sleep(1.0)
        shown += drain_pty(master, 0.5)
        os.write(master, b"exit\n")
    finally:
        os.close(master)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert b"hunter2-typed-after-fg" not in shown, f"the passphrase was echoed: {shown!r}"


# -- write_key: complete, or nothing ---------------------------------

# test_encrypted's SIGUSR1 handler, raising as the first close(2) returns:
# _write_in's `finally: os.close(fd)`, after the link and the directory's fsync.
INTERRUPT_AT_CLOSE = INTERRUPT_AT_RETURN.replace('TARGET = "link"', 'TARGET = "close"')


@pytest.mark.parametrize("given", ["", ", kek=create_key(32)"])
def test_write_key_interrupted_as_close_returns_leaves_nothing(tmp_path: Path, given: str) -> None:
    code = (INTERRUPT_AT_CLOSE.replace("DIR", repr(str(tmp_path)))
            .replace("CALL", f"write_key({str(tmp_path / 'k')!r}, create_key(32){given})"))
    result = run_python(code)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode().split("\n")[0]
    # Either write_key returned (the file is there, fine) or it raised and left nothing.
    assert out in ("RAISED []", "RETURNED ['k']"), out


# -- the longest passphrase -------------------------------

def test_read_password_takes_exactly_max_bytes() -> None:
    # The docstring: ValueError "when the line is longer than
    # PASSWORD_MAX_BYTES (1024) bytes"; a 1024-byte line is not longer.
    answer = b"x" * 1024
    output, status = run_in_pty(answer, answer + b"\n")
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"RESULT 1024 True READONLY" in output, output[-300:]
