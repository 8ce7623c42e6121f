"""read_password's line editing and its answers to SIGCONT, bg and fg.

The oracle for editing is the kernel's own canonical line editor with echo
off, fed the same keys: what getpass and `read -s` give on this terminal.
An overlong line is dropped to its end; a SIGCONT alone loses nothing; a
job stopped, put in the background and brought back prompts again.
"""

from __future__ import annotations

import os
import signal
import termios
import time
from pathlib import Path

import pytest

from conftest import drain_pty
from test_terminal_signals import _read_until, _spawn


def _finish(pid: int, master: int, shown: bytes) -> bytes:
    try:
        shown += drain_pty(master, 10)
    finally:
        os.close(master)
        with_status = os.waitpid(pid, os.WNOHANG)
        if with_status == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return shown


# -- line editing: the terminal's own settings, as the kernel applies them -----------
#
# Oracle: the same keys typed into the kernel's canonical line editor with echo
# off (what getpass, `read -s` and every other passphrase prompt on this
# terminal get).  read_password edits the line itself (ICANON off); "erase,
# kill and end of file as the terminal sets them" means the same bytes.

_EDIT_CHILD = """
import os, sys, termios
from securekeys.crypto import read_password
fd = os.open("/dev/tty", os.O_RDWR)
attrs = termios.tcgetattr(fd)
attrs[0] |= {iflag}
attrs[3] |= {lflag}
for index, value in {cc}:
    attrs[6][index] = bytes([value])
termios.tcsetattr(fd, termios.TCSANOW, attrs)
try:
    pw = read_password("Secret: ")
except BaseException as exc:
    print("MINE", type(exc).__name__, flush=True)
else:
    with pw.reading() as view:
        print("MINE", bytes(view).hex(), flush=True)
# The kernel's canonical line, echo off, read as getpass reads it (until a newline).
quiet = termios.tcgetattr(fd)
quiet[3] &= ~termios.ECHO
termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
print("Kernel: ", end="", flush=True)
line = b""
while not line.endswith(b"\\n"):
    chunk = os.read(fd, 4096)
    if not chunk:
        break
    line += chunk
termios.tcsetattr(fd, termios.TCSAFLUSH, attrs)
print("KERNEL", line.rstrip(b"\\n").hex(), flush=True)
"""


def _mine_and_kernel(typed: bytes, iflag: int = 0, lflag: int = 0,
                     cc: tuple[tuple[int, int], ...] = ()) -> tuple[str, str]:
    pid, master = _spawn(_EDIT_CHILD.format(iflag=iflag, lflag=lflag, cc=list(cc)))
    shown = _read_until(master, b"Secret: ")
    time.sleep(0.2)
    for byte in typed:              # typed key by key, as a user does
        os.write(master, bytes([byte]))
        time.sleep(0.01)
    shown = _read_until(master, b"Kernel: ", shown)
    time.sleep(0.2)
    for byte in typed:
        os.write(master, bytes([byte]))
        time.sleep(0.01)
    shown = _finish(pid, master, shown)
    mine = shown.split(b"MINE ")[1].split()[0].decode()
    kernel = shown.split(b"KERNEL ")[1].split()[0].decode()
    return mine, kernel


def test_erase_removes_a_whole_utf8_character_under_iutf8() -> None:
    # IUTF8 is on in every modern terminal emulator: one Backspace after "ä"
    # removes both of its bytes (else "ä<BS>b" would be b"\xc3b", which no
    # other prompt could reproduce).
    mine, kernel = _mine_and_kernel("pä\x7fb\n".encode(), iflag=getattr(termios, "IUTF8", 0o40000))
    assert kernel == b"pb".hex()
    assert mine == kernel


def test_end_of_file_in_mid_line_is_not_part_of_the_passphrase() -> None:
    # Ctrl-D after "abc" ends a read in canonical mode; it is never a byte of
    # the line.
    mine, kernel = _mine_and_kernel(b"abc\x04def\n")
    assert kernel == b"abcdef".hex()
    assert mine == kernel


def test_word_erase_erases() -> None:
    # Ctrl-W (VWERASE, IEXTEN on: stty's default) erases the last word.
    mine, kernel = _mine_and_kernel(b"wrong \x17right\n")
    assert kernel == b"right".hex()
    assert mine == kernel


def test_literal_next_quotes_the_kill_character() -> None:
    # Ctrl-V Ctrl-U enters a literal 0x15 (VLNEXT), not a kill.
    mine, kernel = _mine_and_kernel(b"ab\x16\x15cd\n")
    assert kernel == b"ab\x15cd".hex()
    assert mine == kernel


def test_delete_is_a_character_when_erase_is_backspace() -> None:
    # `stty erase ^H`: DEL (0x7f) is then an ordinary byte; only the
    # terminal's erase character erases.
    mine, kernel = _mine_and_kernel(b"ab\x7fc\n", cc=((termios.VERASE, 0x08),))
    assert kernel == b"ab\x7fc".hex()
    assert mine == kernel


# -- an overlong line: the rest of it -------------------------------------------------

_OVERLONG_CHILD = """
import os, sys
from securekeys.crypto import read_password
try:
    read_password("Secret: ")
except ValueError:
    print("REFUSED", flush=True)
# The next reader of the terminal (the shell, the next program).
fd = os.open("/dev/tty", os.O_RDONLY)
print("NEXT", os.read(fd, 4096).hex(), flush=True)
"""


@pytest.mark.parametrize("pause", [0.0, 1.0])
def test_rest_of_an_overlong_line_does_not_reach_the_next_reader(pause: float) -> None:
    # The line is refused at byte 1025, but the user is still typing it:
    # the rest is read to its end with echo off and dropped, so none of it is
    # shown or handed to the next reader (at once, or after a pause, as a
    # user types or a terminal pastes in chunks).
    pid, master = _spawn(_OVERLONG_CHILD)
    shown = _read_until(master, b"Secret: ")
    os.write(master, b"x" * 1025)
    time.sleep(pause)
    os.write(master, b"y" * 60 + b"TAILOFSECRET\n")   # the rest of the same line
    shown = _read_until(master, b"REFUSED", shown)
    os.write(master, b"after\n")                         # what the next reader is meant to get
    shown = _read_until(master, b"NEXT ", shown)
    shown = _finish(pid, master, shown)
    assert b"TAILOFSECRET" not in shown                    # on the screen
    assert b"TAILOFSECRET".hex().encode() not in shown     # handed to the next reader
    assert b"after".hex().encode() in shown


# -- SIGCONT while the process runs: echo comes on between two prompts ---------------

_CONT_CHILD = """
import os
from securekeys.crypto import read_password
print("PID", os.getpid(), flush=True)
pw = read_password("Secret: ")
print("DONE", len(pw), flush=True)
"""


def test_sigcont_without_a_stop_loses_nothing() -> None:
    # SIGCONT to a running process does nothing by default (it neither stops
    # nor ends it): the prompt goes on, nothing typed is lost.
    pid, master = _spawn(_CONT_CHILD)
    shown = _read_until(master, b"Secret: ")
    child = int(shown.split(b"PID ")[1].split()[0])
    time.sleep(0.2)
    os.write(master, b"abc")
    time.sleep(0.3)
    os.kill(child, signal.SIGCONT)
    time.sleep(0.3)
    os.write(master, b"def\n")
    shown = _read_until(master, b"DONE ", shown)
    shown = _finish(pid, master, shown)
    assert b"DONE 6" in shown, shown


def test_keys_typed_while_sigcont_comes_are_not_echoed() -> None:
    # A process that sends SIGCONT now and then (a supervisor, a debugger, a
    # `kill -CONT` loop) opens no window with echo on: no key is shown.
    pid, master = _spawn(_CONT_CHILD)
    shown = _read_until(master, b"Secret: ")
    child = int(shown.split(b"PID ")[1].split()[0])
    time.sleep(0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"Q" not in shown:
        os.kill(child, signal.SIGCONT)
        os.write(master, b"Q")
        time.sleep(0.002)
        shown += drain_pty(master)
    typing = shown
    os.write(master, b"\n")
    _finish(pid, master, shown)
    where = typing.find(b"Q")
    assert where < 0, typing[max(0, where - 40):where + 40]


# -- a child forked while the parent prompts ------------------------------------------

def test_stop_bg_fg_prompts_again_without_a_second_stop(tmp_path: Path) -> None:
    # kill -STOP, then `bg`: the prompt, now in the background, stops on
    # SIGTTOU.  After `fg` it prompts again, without stopping a second time
    # for the SIGTTOU its own terminal call caused.
    from test_terminal_signals import _prompt_under_bash
    bash, master, script, shown = _prompt_under_bash(tmp_path)
    try:
        time.sleep(0.3)
        os.kill(script, signal.SIGSTOP)
        shown = _read_until(master, b"SH$ ", shown.replace(b"SH$ ", b""))
        os.write(master, b"bg\n")
        time.sleep(1.0)
        os.write(master, b"fg\n")
        time.sleep(1.5)
        with open(f"/proc/{script}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        shown += drain_pty(master, 0.2)
        assert state != "T", shown
    finally:
        os.kill(script, signal.SIGKILL)
        os.kill(bash, signal.SIGKILL)
        os.waitpid(bash, 0)
        os.close(master)


# -- n_tty's rules in the corners ------------------------------------------------------

def test_reprint_is_a_literal_byte_with_echo_off() -> None:
    # n_tty handles VREPRINT only when L_ECHO is set; with echo off Ctrl-R is data.
    mine, kernel = _mine_and_kernel(b"ab\x12cd\n")
    assert mine == kernel


def test_word_erase_is_altwerase() -> None:
    # Linux's eraser(): a word is alnum/'_'; it stops at the punctuation before it.
    mine, kernel = _mine_and_kernel(b"foo-bar\x17\n")
    assert mine == kernel


def test_erase_does_not_cross_a_mid_line_end_of_file() -> None:
    # Ctrl-D inside a line pushes it (canon_head moves): erase and kill stop there.
    mine, kernel = _mine_and_kernel(b"abc\x04\x7f\x7fd\n")
    assert mine == kernel


def test_kill_does_not_cross_a_mid_line_end_of_file() -> None:
    mine, kernel = _mine_and_kernel(b"abc\x04de\x15f\n")
    assert mine == kernel


def test_erase_of_lone_continuation_bytes_at_line_start() -> None:
    # IUTF8: the kernel does not partially erase; continuation bytes back to
    # the line's start stay.
    mine, kernel = _mine_and_kernel(b"\x80\x80\x7fz\n", iflag=getattr(termios, "IUTF8", 0o40000))
    assert mine == kernel


def test_end_of_file_equal_to_erase_is_erase() -> None:
    # `stty eof ^?`: n_tty checks erase before end of file.
    mine, kernel = _mine_and_kernel(b"ab\x7fc\n", cc=((termios.VEOF, 0x7F),))
    assert mine == kernel


def test_erase_after_1025_bytes_gives_a_1024_byte_line() -> None:
    mine, kernel = _mine_and_kernel(b"x" * 1025 + b"\x7f\n")
    assert mine == kernel


def test_overlong_line_ends_at_its_unquoted_newline() -> None:
    # A newline quoted by Ctrl-V does not end an overlong line: the rest of
    # it is read and dropped too.
    pid, master = _spawn(_OVERLONG_CHILD)
    shown = _read_until(master, b"Secret: ")
    os.write(master, b"x" * 1030 + b"\x16\n")
    time.sleep(1.0)
    os.write(master, b"TAILOFSECRET\n")                 # the rest of the same line
    shown = _read_until(master, b"REFUSED", shown)
    os.write(master, b"after\n")
    shown = _read_until(master, b"NEXT ", shown)
    shown = _finish(pid, master, shown)
    assert b"TAILOFSECRET" not in shown
    assert b"TAILOFSECRET".hex().encode() not in shown
