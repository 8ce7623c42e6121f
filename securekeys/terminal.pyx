# cython: language_level=3, embedsignature=True, auto_pickle=False
"""Reading a passphrase from the controlling terminal into guarded memory.

Terminal handling, not crypto: ``securekeys.crypto`` re-exports
``read_password`` (and ``PASSWORD_MAX_BYTES``) so that existing imports keep
working.  The passphrase goes from read(2) straight into a SecureBuffer; it
never exists as a str or bytes.
"""

import os
import termios
import threading

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from libc.signal cimport SIG_IGN, SIGALRM, SIGCONT, SIGHUP, SIGQUIT, SIGTERM, SIGTSTP, SIGTTIN, SIGTTOU, raise_
from libc.string cimport memcpy, memset
from posix.signal cimport sigaction, sigaction_t, sigemptyset

from securekeys._checks cimport raise_errno
from securekeys._fdio cimport read_retrying
from securekeys.includes cimport system
from securekeys._memory cimport SecureBuffer
from securekeys._wipe cimport wipe_stack_and_registers

PASSWORD_MAX_BYTES = 1024
_one_prompt = threading.Lock()

cdef enum:
    _COPY_STACK = 1024    # memcpy and read(2)'s wrapper use a few hundred bytes of stack
    _SIGNAL_SLICE_MS = 100
    _SIGNALLED = -3       # _read_line: a guarded signal came; the terminal must be restored first


# -- signals while echo is off -----------------------------------------------------
#
# Echo is off while the passphrase is typed.  A signal that stops or ends the
# process there would leave the terminal without echo (SIGQUIT, SIGTERM,
# SIGHUP, SIGALRM), or let the shell turn echo back on while we keep reading
# (Ctrl-Z, then fg: what is typed after fg would show).  So while the prompt
# is up these signals only note themselves; the reader then restores the
# terminal and the previous handlers, and delivers the signal again as they
# would have had it: the process stops or dies with echo on, or a Python
# handler runs.  If the process goes on (fg, or a handler that returns), the
# prompt starts over, echo off again.  SIGINT stays Python's: Ctrl-C is
# KeyboardInterrupt, and the `finally` restores the terminal.

cdef extern from "stdatomic.h" nogil:
    ctypedef unsigned long atomic_ulong "atomic_ulong"
    unsigned long atomic_exchange(atomic_ulong *obj, unsigned long desired)
    unsigned long atomic_load(atomic_ulong *obj)
    unsigned long atomic_fetch_or(atomic_ulong *obj, unsigned long arg)

cdef enum:
    _GUARDED_COUNT = 8
cdef int _GUARDED[_GUARDED_COUNT]
# SIGCONT too: a SIGSTOP (a debugger, `kill -STOP`) cannot be caught, but the
# shell turns echo on when the job stops, so a continued prompt starts over.
_GUARDED[:] = [SIGALRM, SIGHUP, SIGQUIT, SIGTERM, SIGTSTP, SIGTTIN, SIGTTOU, SIGCONT]
cdef atomic_ulong _caught = 0     # the guarded signals that came during the prompt, one bit each


cdef void _note_signal(int sig) noexcept nogil:
    atomic_fetch_or(&_caught, 1UL << sig)


cdef int _guard_signals(sigaction_t *previous, bint *guarded) except -1:
    # Take over the guarded signals, keeping their previous actions; one
    # ignored (nohup's SIGHUP) stays ignored.
    cdef sigaction_t noting
    cdef int i
    memset(&noting, 0, sizeof(noting))
    noting.sa_handler = _note_signal
    noting.sa_flags = 0              # no SA_RESTART: poll(2) returns EINTR at once
    sigemptyset(&noting.sa_mask)
    atomic_exchange(&_caught, 0)
    for i in range(_GUARDED_COUNT):
        guarded[i] = False
        if sigaction(_GUARDED[i], NULL, &previous[i]) != 0:
            _restore_signals(previous, guarded)
            return raise_errno("sigaction", errno)
        if previous[i].sa_handler == SIG_IGN:
            continue
        if sigaction(_GUARDED[i], &noting, NULL) != 0:
            _restore_signals(previous, guarded)
            return raise_errno("sigaction", errno)
        guarded[i] = True
    return 0


cdef void _restore_signals(const sigaction_t *previous, bint *guarded) noexcept nogil:
    # Put back what was there, unless the application installed something
    # else meanwhile (a Python handler run during the prompt may call
    # signal.signal): then its choice stays.
    cdef sigaction_t now
    cdef int i
    for i in range(_GUARDED_COUNT):
        if guarded[i]:
            if sigaction(_GUARDED[i], NULL, &now) == 0 and now.sa_handler == _note_signal:
                sigaction(_GUARDED[i], &previous[i], NULL)   # cannot fail: it was in place before
            guarded[i] = False


cdef int _deliver(unsigned long caught) except -1:
    # Each signal that came during the prompt, now that echo is on and the
    # previous actions are back, as they would have had it: stop, die, or a
    # Python handler, which may raise.
    cdef int sig
    for sig in range(1, 64):
        if caught & (1UL << sig):
            raise_(sig)
    PyErr_CheckSignals()
    return 0


cdef bint _try_set_terminal(int fd, list attributes) except -1:
    # tcsetattr; False when a signal interrupted it (noted if it is one of
    # ours: SIGTTOU when the process is in the background).
    try:
        termios.tcsetattr(fd, termios.TCSAFLUSH, attributes)
        return True
    except termios.error as exc:     # not an OSError subclass
        if exc.args[0] == EINTR:
            return False
        raise OSError(*exc.args) from None


cdef int _set_terminal(int fd, list attributes) except -1:
    while not _try_set_terminal(fd, attributes):
        PyErr_CheckSignals()
    return 0


cdef int _wait_for_input(int fd) except -1:
    # 0 when input is ready; _SIGNALLED when a guarded signal came.
    # Ctrl-C is a SIGINT that Python turns into KeyboardInterrupt only at its
    # next check: one that lands after that check but before read(2) blocks
    # (typed right after the prompt) would not interrupt the read, and the
    # process would hang until the next key.  So wait in slices and run the
    # handlers between them: a signal is acted on within one slice.
    cdef system.pollfd waiting
    cdef int ready
    cdef int err = 0
    waiting.fd = fd
    waiting.events = system.POLLIN
    while True:
        if atomic_load(&_caught):
            return _SIGNALLED
        PyErr_CheckSignals()
        with nogil:
            ready = system.poll(&waiting, 1, _SIGNAL_SLICE_MS)
            if ready < 0:
                err = errno
        if ready > 0:
            return 0   # input, end of file or an error: read(2) says which
        if ready < 0 and err != EINTR:
            return raise_errno("wait for the terminal", err)


cdef Py_ssize_t _read_line(int fd, unsigned char *buf, Py_ssize_t cap, bint *eof) except -2:
    # read(2) one byte at a time into `buf` (cap + 1 bytes: room for the end
    # of the line) until a newline or carriage return (not stored), end of
    # file, or more than `cap` bytes.  Returns the count, -1 when the line is
    # longer than `cap`, or _SIGNALLED; `eof` tells whether input ended
    # without a newline.  One byte at a time so that nothing after the line
    # is consumed; the bytes only ever live in `buf` (guarded memory).
    cdef Py_ssize_t count = 0
    while True:
        if _wait_for_input(fd) == _SIGNALLED:
            return _SIGNALLED
        if read_retrying(fd, buf + count, 1, "read from the terminal") == 0:
            eof[0] = True               # end of file (Ctrl-D)
            return count
        if buf[count] == b'\n' or buf[count] == b'\r':   # \r: a terminal left in raw mode
            buf[count] = 0
            return count
        count += 1
        if count > cap:
            return -1


def read_password(prompt="Password: "):
    """Read a passphrase from the controlling terminal into a READONLY SecureBuffer.

    Opens ``/dev/tty`` (OSError when the process has no controlling terminal),
    writes `prompt` to it, turns echo off (restored in any case), and reads
    with read(2), one byte at a time, straight into guarded memory up to the
    newline; the passphrase never exists as a str or bytes.  The result holds
    exactly the bytes typed, without the newline.

    ValueError when nothing was entered (a SecureBuffer cannot be empty) or
    when the line is longer than PASSWORD_MAX_BYTES (1024) bytes; EOFError
    on end of file before any input.

    Echo is never left off: a signal that stops or ends the process at the
    prompt (Ctrl-Z, Ctrl-\\, SIGTERM, SIGHUP, SIGALRM, SIGTTOU in the
    background) first restores the terminal, then acts as it would have
    (every one that came; a handler the application installed meanwhile is
    the one that acts); after `fg` (also after SIGSTOP) or a Python handler
    that returns, the prompt starts over.  A terminal left in raw mode still
    reads a line (Enter ends it, Ctrl-C interrupts).  RuntimeError off the
    main thread (where Python handles signals: a prompt elsewhere could be
    left with echo off); prompts are served one at a time.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    # The main thread only: it is where Python runs signal handlers, and where
    # Ctrl-C ends the process; a prompt on another thread could be left
    # behind with echo off.  One prompt at a time: the signal actions taken
    # over are the process's, and two prompts on one terminal could not both
    # be answered anyway.
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("read_password() runs on the main thread only (where signals are handled: "
                           "a prompt on another thread could leave the terminal's echo off)")
    with _one_prompt:
        return _read_password(prompt)


cdef SecureBuffer _read_password(str prompt):
    cdef SecureBuffer line = None
    cdef SecureBuffer result = None
    cdef Py_ssize_t count = 0
    cdef unsigned char *buf
    cdef bint eof = False
    cdef sigaction_t previous[_GUARDED_COUNT]
    cdef bint guarded[_GUARDED_COUNT]
    cdef bint restore_later = False
    cdef unsigned long caught
    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    try:
        line = SecureBuffer(PASSWORD_MAX_BYTES + 1)
        while True:
            count = _SIGNALLED
            restore_later = False
            _guard_signals(previous, guarded)   # before echo goes off: no moment without them
            try:
                try:
                    old = termios.tcgetattr(fd)
                except termios.error as exc:     # not an OSError subclass
                    raise OSError(*exc.args) from None
                new = list(old)
                new[3] = (new[3] & ~termios.ECHO) | termios.ICANON | termios.ISIG   # a line, Ctrl-C a
                new[0] |= termios.ICRNL                                           # signal, after `stty raw` too
                if _try_set_terminal(fd, new):   # False: a signal came first (SIGTTOU in the background)
                    try:
                        os.write(fd, prompt.encode())
                        buf = line.borrow_write()
                        try:
                            count = _read_line(fd, buf, PASSWORD_MAX_BYTES, &eof)
                        finally:
                            line.release_write()
                    finally:
                        # TCSAFLUSH also discards anything typed but not read, so that no
                        # part of an overlong line reaches the next reader of the terminal.
                        restore_later = not _try_set_terminal(fd, old)
                        os.write(fd, b"\n")     # the newline that echo did not show
            finally:
                _restore_signals(previous, guarded)
                if restore_later:
                    _set_terminal(fd, old)   # with the previous actions: in the background, that stops us
                # Delivered even when the prompt ends in an exception (Ctrl-C
                # after a SIGTERM): no signal that came is lost.
                caught = atomic_exchange(&_caught, 0)
                if caught:
                    _deliver(caught)
            PyErr_CheckSignals()
            if count != _SIGNALLED:
                break
            count = 0      # go on after fg (or a handler that returned): the prompt starts over
            eof = False
        if count == -1:
            raise ValueError(f"password is longer than {PASSWORD_MAX_BYTES} bytes")
        if count == 0:
            if eof:
                raise EOFError("end of file on the terminal before a password")
            raise ValueError("no password was entered")
        result = SecureBuffer(count)
        memcpy(result.fill_ptr(), line.borrow_read(), <size_t>count)   # guarded to guarded
        # memcpy (and the newline test above) leave the passphrase's bytes in
        # registers, which later code may spill to the stack.
        wipe_stack_and_registers(_COPY_STACK)
        line.release_read()
        result.seal()
    except BaseException:
        if result is not None:
            result.destroy()
        raise
    finally:
        if line is not None:
            line.destroy()
        os.close(fd)
    return result
