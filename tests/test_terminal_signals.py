"""Signals at a passphrase prompt and around write_key's last system calls.

- Echo is off while a passphrase is typed: Ctrl-Z then `fg` must not show
  what is typed after `fg` (the shell turns echo back on when the job
  stops), and Ctrl-\\, SIGTERM or SIGHUP must not leave the terminal
  without echo.
- A signal handler that raises as write_key's last close(2) returns: either
  write_key returned with the file in place, or it raised and left nothing.
- read_password takes a passphrase of exactly PASSWORD_MAX_BYTES.
- While a prompt is up, every signal that comes is delivered as it would
  have been (both of two at once; SIGTTOU in the background stops the job),
  a handler installed meanwhile stays, SIGSTOP then fg does not echo, and a
  prompt runs on the main thread only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import drain_pty, run_python
from test_crypto import run_in_pty
from test_encrypted import INTERRUPT_AT_RETURN


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


def _interactive_bash(cwd: Path) -> tuple[int, int]:
    """An interactive bash (job control: Ctrl-Z, fg) on a new pty, in `cwd`:
    (pid, master).  Skips the test where there is no bash."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    pid, master = pty.fork()
    if pid == 0:   # pragma: no cover - the child: an interactive shell
        try:
            os.chdir(cwd)
            os.execve(bash, [bash, "--norc", "--noprofile", "-i"],
                      {"PATH": os.environ["PATH"], "PS1": "SH$ ", "TERM": "dumb", "HOME": str(cwd)})
        finally:
            os._exit(127)
    return pid, master


def _prompt_under_bash(cwd: Path) -> tuple[int, int, int, bytes]:
    """A script at read_password's prompt, run by an interactive bash:
    (bash's pid, the terminal's master side, the script's pid, what the
    terminal showed so far)."""
    script = cwd / "p.py"
    script.write_text("import os\nfrom securekeys.crypto import read_password\n"
                      "print('PID', os.getpid(), flush=True)\nread_password('Secret: ')\nprint('GOT')\n")
    pid, master = _interactive_bash(cwd)
    shown = _read_until(master, b"SH$ ")
    os.write(master, f"{sys.executable} {script}\n".encode())
    shown = _read_until(master, b"Secret: ", shown)
    return pid, master, int(shown.split(b"PID ")[1].split()[0]), shown


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
    pid, master = _interactive_bash(tmp_path)
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


# -- signals while a prompt is up, delivered as before ---------------------------

def _spawn(code: str) -> tuple[int, int]:
    """`code` in a child whose controlling terminal is a new pty: (pid, master)."""
    pid, master = pty.fork()
    if pid == 0:   # pragma: no cover - the child
        try:
            os.execv(sys.executable, [sys.executable, "-c", textwrap.dedent(code)])
        finally:
            os._exit(127)
    return pid, master


def _reap(pid: int, timeout: float = 30) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def _child_at_terminal(code: str) -> Iterator[tuple[int, int]]:
    """_spawn(code); the child is killed and the terminal closed afterwards."""
    pid, master = _spawn(code)
    try:
        yield pid, master
    finally:
        _kill(pid)
        os.close(master)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def test_a_handler_installed_during_the_prompt_stays() -> None:
    # A Python handler that runs during the prompt (here SIGUSR1's, run by
    # read_password's own poll loop) installs a SIGTERM handler: after the
    # prompt it is the one in force, not the pre-prompt SIG_DFL.
    with _child_at_terminal("""
        import os, signal, time
        from securekeys.crypto import read_password
        def on_term(signum, frame):
            print("HANDLED SIGTERM", flush=True)
        def on_usr1(signum, frame):
            signal.signal(signal.SIGTERM, on_term)
            print("INSTALLED", flush=True)
        signal.signal(signal.SIGUSR1, on_usr1)
        pw = read_password("Secret: ")
        print("GOT", pw.size, signal.getsignal(signal.SIGTERM) is on_term, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("ALIVE", flush=True)
    """) as (pid, master):
        shown = _read_until(master, b"Secret: ")
        time.sleep(0.3)
        os.kill(pid, signal.SIGUSR1)
        shown = _read_until(master, b"INSTALLED", shown)
        os.write(master, b"hunter2\n")
        shown = _read_until(master, b"GOT", shown)
        status = _reap(pid)
        shown += drain_pty(master, 0.2)
        assert status is not None
        assert os.WIFEXITED(status) and b"HANDLED SIGTERM" in shown, (
            f"the SIGTERM handler installed during the prompt was undone: status {status}, {shown!r}")


def test_two_guarded_signals_at_the_prompt_both_act() -> None:
    # SIGTERM (default: die) and SIGHUP (a handler that returns) arrive
    # together (sent while the process is stopped): each is delivered, so
    # the process dies of SIGTERM rather than going on with the prompt.
    with _child_at_terminal("""
        import signal
        from securekeys.crypto import read_password
        signal.signal(signal.SIGHUP, lambda s, f: print("HUP HANDLED", flush=True))
        pw = read_password("Secret: ")
        print("RETURNED", pw.size, flush=True)
    """) as (pid, master):
        shown = _read_until(master, b"Secret: ")
        time.sleep(0.3)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGHUP)
        os.kill(pid, signal.SIGCONT)
        time.sleep(1.0)
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            os.write(master, b"hunter2\n")
            status = _reap(pid)
        shown += drain_pty(master, 0.2)
        assert status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, (
            f"SIGTERM at the prompt was lost: status {status}, terminal {shown!r}")


def test_a_background_prompt_stops_on_sigttou() -> None:
    # A job in the background (`cmd &`, or Ctrl-Z then `bg`): changing the
    # terminal's modes sends SIGTTOU, which stops the process (as it would
    # without read_password; `fg` then gets the prompt), not an OSError.
    with _child_at_terminal("""
        import os, signal, sys, time
        leader = os.getpid()
        child = os.fork()
        if child == 0:
            os.setpgid(0, 0)          # a background process group of the session
            from securekeys.crypto import read_password
            try:
                read_password("Secret: ")
                print("RETURNED", flush=True)
            except BaseException as exc:
                print("RAISED", type(exc).__name__, exc, flush=True)
            os._exit(0)
        _, status = os.waitpid(child, os.WUNTRACED)
        if os.WIFSTOPPED(status):
            print("STOPPED", signal.Signals(os.WSTOPSIG(status)).name, flush=True)
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        print("DONE", flush=True)
    """) as (pid, master):
        shown = _read_until(master, b"DONE")
        assert b"STOPPED SIGTTOU" in shown, f"a background prompt did not stop on SIGTTOU: {shown!r}"


def test_sigstop_then_fg_does_not_echo_the_passphrase(tmp_path: Path) -> None:
    # kill -STOP (a debugger, a job-control tool) instead of Ctrl-Z: bash
    # turns echo back on when its job stops; on SIGCONT the prompt starts
    # over with echo off.
    pid, master, child, shown = _prompt_under_bash(tmp_path)
    try:
        time.sleep(0.5)
        os.kill(child, signal.SIGSTOP)
        shown = _read_until(master, b"SH$ ", shown[shown.index(b"Secret: "):])
        os.write(master, b"fg\n")
        time.sleep(1.0)
        os.write(master, b"hunter2-typed-after-fg\n")
        time.sleep(1.0)
        shown += drain_pty(master, 0.5)
        os.write(master, b"exit\n")
    finally:
        os.close(master)
        _kill(pid)
    assert b"hunter2-typed-after-fg" not in shown, f"the passphrase was echoed: {shown!r}"


def test_read_password_runs_on_the_main_thread_only() -> None:
    # Elsewhere a Ctrl-C (KeyboardInterrupt in the main thread, which may
    # end the process) or a signal handler could leave the prompt behind
    # with echo off.
    from securekeys.crypto import read_password
    raised: list[BaseException] = []

    def prompt() -> None:
        try:
            read_password("Secret: ")
        except BaseException as exc:
            raised.append(exc)
    thread = threading.Thread(target=prompt)
    thread.start()
    thread.join()
    assert len(raised) == 1 and isinstance(raised[0], RuntimeError), raised
    assert "main thread" in str(raised[0])


# -- every signal, forks, re-entrance, timers, SIGSTOP mid-line ---------------------

@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGRTMIN", "SIGVTALRM"])
def test_any_signal_at_its_default_restores_echo_first(signame: str) -> None:
    # SIGUSR1, SIGVTALRM, a realtime signal...: any signal whose default
    # action ends the process is deferred while echo is off: it dies with
    # echo on.
    with _child_at_terminal("""
        from securekeys.crypto import read_password
        read_password("Secret: ")
    """) as (pid, master):
        _read_until(master, b"Secret: ")
        time.sleep(0.3)
        os.kill(pid, getattr(signal, signame))
        status = _reap(pid)
        assert status is not None and os.WIFSIGNALED(status)
        assert _echo(master), f"{signame} at the prompt killed the process with echo off"



def test_a_default_action_set_during_the_prompt_is_deferred_too() -> None:
    # A handler run during the prompt resets SIGTERM to SIG_DFL: the next
    # SIGTERM is deferred like the others, and echo is restored first.
    with _child_at_terminal("""
        import signal
        from securekeys.crypto import read_password
        def on_usr1(signum, frame):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            print("RESET", flush=True)
        signal.signal(signal.SIGUSR1, on_usr1)
        read_password("Secret: ")
    """) as (pid, master):
        shown = _read_until(master, b"Secret: ")
        time.sleep(0.3)
        os.kill(pid, signal.SIGUSR1)
        _read_until(master, b"RESET", shown)
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        status = _reap(pid)
        assert status is not None and os.WIFSIGNALED(status)
        assert _echo(master), "SIGTERM after a handler reinstalled SIG_DFL killed the process with echo off"



FORK_DURING_PROMPT = """
    import os, signal, sys, threading, time, warnings
    warnings.simplefilter("ignore")
    from securekeys.crypto import read_password
    def worker():
        time.sleep(0.5)                      # the main thread is at the prompt
        child = os.fork()                    # multiprocessing's 'fork' start method does this
        if child == 0:
            CHILD_CODE
            os._exit(0)
        print("FORKED", flush=True)
        time.sleep(0.5)
        os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                print("CHILD", "signalled" if os.WIFSIGNALED(status) else "exit",
                      os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
                return
            time.sleep(0.05)
        print("CHILD SURVIVED SIGTERM", flush=True)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    threading.Thread(target=worker, daemon=True).start()
    read_password("Secret: ")
"""


def test_a_child_forked_during_the_prompt_dies_of_sigterm() -> None:
    # A fork from another thread during the prompt: the child is not
    # prompting, and SIGTERM ends it as it would have.
    code = FORK_DURING_PROMPT.replace("CHILD_CODE", "time.sleep(2)")
    with _child_at_terminal(code) as (pid, master):
        shown = _read_until(master, b"CHILD ", timeout=30)
        shown = _read_until(master, b"\n", shown[shown.index(b"CHILD "):])
        assert b"CHILD signalled 15" in shown, f"the forked child did not die of SIGTERM: {shown!r}"


def test_a_child_forked_during_the_prompt_cannot_prompt() -> None:
    # The child of a fork made during a prompt would take the parent's
    # prompt modes (echo off) for the terminal's own: its read_password is
    # a RuntimeError at once, not a prompt that leaves echo off or echoes.
    child = ("import securekeys.crypto as c\n"
             "try:\n"
             "    c.read_password('Child: ')\n"    # a prompt would wait, and die of the parent's SIGTERM
             "except RuntimeError as exc:\n"
             "    print('CHILD REFUSED', exc, flush=True)\n")
    code = FORK_DURING_PROMPT.replace("CHILD_CODE", f"exec({child!r})")
    with _child_at_terminal(code) as (pid, master):
        # Parent and child share the terminal: the parent's own output may
        # land inside the child's line, so wait for the child's words, not
        # for the end of a line.
        shown = _read_until(master, b"CHILD REFUSED", timeout=30)
        shown = _read_until(master, b"forked while its parent was prompting", shown, timeout=30)


def test_read_password_from_a_handler_during_the_prompt_is_refused() -> None:
    # A handler run during the prompt calls read_password again: a
    # RuntimeError, not a hang with echo off.
    with _child_at_terminal("""
        import signal
        from securekeys.crypto import read_password
        def on_usr1(signum, frame):
            try:
                read_password("Nested: ")
                print("NESTED RETURNED", flush=True)
            except RuntimeError as exc:
                print("NESTED REFUSED", flush=True)
        signal.signal(signal.SIGUSR1, on_usr1)
        read_password("Secret: ")
        print("OUTER RETURNED", flush=True)
    """) as (pid, master):
        shown = _read_until(master, b"Secret: ")
        time.sleep(0.3)
        os.kill(pid, signal.SIGUSR1)
        time.sleep(2)
        shown += drain_pty(master, 0.2)
        assert b"NESTED REFUSED" in shown or b"Nested: " in shown, (
            f"read_password called from a handler during the prompt hung: {shown!r}")



def test_a_prompt_under_a_10ms_itimer_reads_what_was_typed() -> None:
    # A SIGALRM with a Python handler every 10 ms (progress bars,
    # watchdogs): the handler runs, the prompt goes on, nothing typed is lost.
    with _child_at_terminal("""
        import signal
        from securekeys.crypto import read_password
        ticks = 0
        def tick(signum, frame):
            global ticks
            ticks += 1
        signal.signal(signal.SIGALRM, tick)
        signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
        try:
            pw = read_password("Secret: ")
            print("GOT", pw.size, flush=True)
        except BaseException as exc:
            print("RAISED", type(exc).__name__, flush=True)
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        print("TICKS", ticks, flush=True)
    """) as (pid, master):
        shown = _read_until(master, b"Secret: ")
        for ch in b"hunter2":
            os.write(master, bytes([ch]))
            time.sleep(0.05)
            shown += drain_pty(master)
        os.write(master, b"\n")
        shown = _read_until(master, b"TICKS", shown, timeout=30)
        assert b"GOT 7" in shown, f"the passphrase typed under a 10 ms timer was cut: {shown[-200:]!r}"



def test_sigstop_mid_line_leaves_nothing_for_the_shell(tmp_path: Path) -> None:
    # SIGSTOP cannot be caught.  A half-typed line must not wait in the
    # kernel for the shell that takes the terminal to read and show it: the
    # line is edited in the process (ICANON off), byte by byte.
    pid, master, child, shown = _prompt_under_bash(tmp_path)
    try:
        time.sleep(0.5)
        os.write(master, b"partialSECRET")      # typed, no Enter yet
        time.sleep(0.5)
        os.kill(child, signal.SIGSTOP)
        shown = _read_until(master, b"SH$ ", shown[shown.index(b"Secret: "):])
        time.sleep(0.5)
        shown += drain_pty(master, 0.5)
        os.write(master, b"\x15")               # Ctrl-U: clear whatever the shell got
        os.write(master, b"kill -9 %1\n")
        time.sleep(0.3)
        os.write(master, b"exit\n")
    finally:
        os.close(master)
        _kill(pid)
    assert b"partialSECRET" not in shown, f"the partial passphrase reached the shell: {shown!r}"


@pytest.mark.parametrize("typed", [b"abX\x7fc\n", b"zzz\x15abc\n", b"abc\r", b"a\x04bc\n"])
def test_the_line_is_edited_in_the_process(typed: bytes) -> None:
    # Erase (the pty's DEL), kill (Ctrl-U), a carriage return, and Ctrl-D
    # inside a line (ignored) work as the terminal's own line editing did.
    output, status = run_in_pty(b"abc", typed)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"RESULT 3 True READONLY" in output, output[-300:]
