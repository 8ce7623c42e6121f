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
from libc.signal cimport (SIG_DFL, SIGABRT, SIGBUS, SIGCHLD, SIGCONT, SIGFPE, SIGILL, SIGKILL, SIGSEGV,
                          SIGSTOP, SIGSYS, SIGTRAP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH, raise_)
from libc.string cimport memcpy, memset
from posix.signal cimport sigaction, sigaction_t, sigemptyset, SA_SIGINFO

from securekeys._checks cimport raise_errno
from securekeys._fdio cimport read_retrying
from securekeys.includes cimport sodium, system
from securekeys._memory cimport SecureBuffer
from securekeys._wipe cimport wipe_stack_and_registers

PASSWORD_MAX_BYTES = 1024

cdef enum:
    _COPY_STACK = 1024    # memcpy and read(2)'s wrapper use a few hundred bytes of stack
    _SIGNAL_SLICE_MS = 100
    _SIGNALLED = -3       # _read_line: a deferred signal came; the terminal must be restored first
    _MODES_LOST = -4      # _read_line: the terminal's modes are not the prompt's (after SIGSTOP)
    _SIGNALS = 65         # Linux: signals 1..64


# -- signals while echo is off -----------------------------------------------------
#
# Echo is off while the passphrase is typed.  A signal whose action is the
# default one would stop or end the process there: it would die with the
# terminal's echo off (SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, a realtime
# signal, ...), or stop and let the shell turn echo on while we go on
# reading after `fg` (Ctrl-Z, SIGTTOU in the background).  So while the
# prompt is up, every signal at its default action
# (but those that cannot wait: SIGKILL, SIGSTOP, the faults) only notes
# itself; the reader restores the terminal and the previous actions, then
# delivers each signal that came, to act as it would have: the process stops
# or dies with echo on.  If it goes on (fg), the prompt starts over, what was
# typed wiped.  A signal with a Python handler (Ctrl-C's KeyboardInterrupt, an
# application's SIGTERM or SIGALRM handler) is left alone: Python runs the
# handler in the wait loop; if it raises, the terminal is restored on the way
# out; if it returns, the prompt goes on, nothing lost.  A Python handler may
# also change actions during the prompt: they are looked at again after every
# wait, so a signal reset to its default is deferred too, and one the
# application took over stays the application's.  SIGSTOP cannot be
# caught: after it, the shell has turned echo on; the wait loop looks at the
# terminal's modes, and when they are not the prompt's any more the prompt
# starts over, echo off (a SIGCONT alone changes nothing and loses nothing).

cdef extern from "stdatomic.h" nogil:
    ctypedef int atomic_int "atomic_int"
    int atomic_exchange(atomic_int *obj, int desired)
    int atomic_load(atomic_int *obj)
    void atomic_store(atomic_int *obj, int desired)

cdef extern from "termios.h" nogil:
    enum: IUTF8      # not in Python 3.11's termios module

cdef extern from "signal.h" nogil:
    int SIGRTMAX    # a glibc function call, in C: some realtime signals are the C library's own

cdef atomic_int _pending[_SIGNALS]   # the deferred signals that came, one flag each
cdef atomic_int _any_pending = 0
cdef sigaction_t _previous[_SIGNALS] # the action each deferred signal had before the prompt
cdef bint _deferred[_SIGNALS]        # the prompt's handler is installed for it
cdef bint _prompting = False         # a prompt is up (in this process)
cdef bint _forked_from_prompt = False  # this process was forked while its parent prompted


cdef void _note_signal(int sig) noexcept nogil:
    atomic_store(&_pending[sig], 1)
    atomic_store(&_any_pending, 1)


cdef bint _can_wait(int sig) noexcept nogil:
    # Signals that may be held until the terminal is restored: not SIGKILL
    # and SIGSTOP (they cannot be caught), not the faults (the faulting code
    # would run again at once), not those whose default is to do nothing.
    return not (sig == SIGKILL or sig == SIGSTOP or sig == SIGSEGV or sig == SIGBUS or sig == SIGFPE
                or sig == SIGILL or sig == SIGTRAP or sig == SIGSYS or sig == SIGABRT or sig == SIGCHLD
                or sig == SIGWINCH or sig == SIGURG or sig == SIGCONT)


cdef void _sync_deferred() noexcept nogil:
    # Defer every signal that is at its default action now; forget one the
    # application has taken over since (its action stays).
    cdef sigaction_t now
    cdef sigaction_t noting
    cdef int sig
    memset(&noting, 0, sizeof(noting))
    noting.sa_handler = _note_signal
    noting.sa_flags = 0              # no SA_RESTART: poll(2) returns EINTR at once
    sigemptyset(&noting.sa_mask)
    for sig in range(1, SIGRTMAX + 1):
        if not _can_wait(sig) or sigaction(sig, NULL, &now) != 0:
            continue                 # EINVAL: one of the C library's own realtime signals
        if (now.sa_flags & SA_SIGINFO) == 0 and now.sa_handler == _note_signal:
            continue
        _deferred[sig] = False
        if (now.sa_flags & SA_SIGINFO) == 0 and now.sa_handler == SIG_DFL:
            _previous[sig] = now
            _deferred[sig] = sigaction(sig, &noting, NULL) == 0


cdef void _restore_signals() noexcept nogil:
    # Put back what was there, unless the application installed something
    # else meanwhile: then its choice stays.
    cdef sigaction_t now
    cdef int sig
    for sig in range(1, _SIGNALS):
        if _deferred[sig]:
            if (sigaction(sig, NULL, &now) == 0 and (now.sa_flags & SA_SIGINFO) == 0
                    and now.sa_handler == _note_signal):
                sigaction(sig, &_previous[sig], NULL)   # cannot fail: it was in place before
            _deferred[sig] = False


cdef int _deliver_pending(int fd) except -1:
    # Each deferred signal that came, now that echo is on and the previous
    # actions are back, as they would have had it.  A SIGTTOU or SIGTTIN is
    # dropped once the process is in the foreground: it was our own terminal
    # call's, in the background, and that call has since stopped us and
    # gone through (stopping a second time would need a second `fg`).
    cdef int sig
    atomic_exchange(&_any_pending, 0)
    for sig in range(1, _SIGNALS):
        if atomic_exchange(&_pending[sig], 0):
            if (sig == SIGTTOU or sig == SIGTTIN) and _in_foreground(fd):
                continue
            raise_(sig)
    PyErr_CheckSignals()
    return 0


cdef bint _in_foreground(int fd):
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


cdef void _after_fork_in_child() noexcept nogil:
    # A fork (from another thread, during a prompt) must not leave the child
    # with the prompt's handlers, which would make it deaf to SIGTERM: the
    # child is not prompting.
    global _prompting, _forked_from_prompt
    cdef int sig
    if _prompting:
        _restore_signals()
        for sig in range(_SIGNALS):
            atomic_store(&_pending[sig], 0)
        atomic_store(&_any_pending, 0)
        _forked_from_prompt = True   # the terminal's modes are the parent's prompt's
    _prompting = False


if system.pthread_atfork(NULL, NULL, _after_fork_in_child) != 0:
    raise OSError("pthread_atfork failed")


cdef bint _try_set_terminal(int fd, list attributes) except -1:
    # tcsetattr; False when a signal interrupted it (a deferred one is noted:
    # SIGTTOU when the process is in the background).
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
    # 0 when input is ready; _SIGNALLED when a deferred signal came;
    # _MODES_LOST when echo or canonical mode is back on (the shell took
    # the terminal while we were stopped).
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
        if atomic_load(&_any_pending):
            return _SIGNALLED
        PyErr_CheckSignals()
        _sync_deferred()             # a Python handler may have changed an action
        try:
            if termios.tcgetattr(fd)[3] & (termios.ECHO | termios.ICANON):   # the prompt has both off
                return _MODES_LOST
        except termios.error as exc:
            raise OSError(*exc.args) from None
        with nogil:
            ready = system.poll(&waiting, 1, _SIGNAL_SLICE_MS)
            if ready < 0:
                err = errno
        if ready > 0:
            return 0   # input, end of file or an error: read(2) says which
        if ready < 0 and err != EINTR:
            return raise_errno("wait for the terminal", err)


# The line is edited here, not by the terminal (ICANON off): in canonical
# mode a half-typed line waits in the kernel, where a shell that takes the
# terminal after a SIGSTOP reads it and shows it.  Read byte by byte, each
# byte is in guarded memory as soon as it is typed.
cdef struct _Editing:
    # The terminal's editing characters (-1: disabled), applied as its own
    # line discipline (Linux n_tty) applies them in canonical mode with echo
    # off: erase and word-erase never split a UTF-8 character (IUTF8), a
    # word is letters, digits and "_" (n_tty's ALTWERASE), end of file inside
    # a line hands over what was typed (erase and kill stop there), and
    # reprint is an ordinary byte when echo is off.
    int erase
    int kill
    int eof
    int werase     # with IEXTEN
    int lnext      # with IEXTEN: the next byte is taken literally
    bint utf8


cdef enum:
    _LINE_MAX = 4096      # n_tty's line: 4095 bytes and the newline; more are dropped, as there


cdef inline bint _continuation(const _Editing *keys, unsigned char byte) noexcept nogil:
    return keys.utf8 and (byte & 0xC0) == 0x80


cdef inline bint _word_byte(unsigned char byte) noexcept nogil:
    return (b'a' <= byte <= b'z') or (b'A' <= byte <= b'Z') or (b'0' <= byte <= b'9') or byte == b'_'


cdef Py_ssize_t _erase(unsigned char *buf, Py_ssize_t count, Py_ssize_t floor, const _Editing *keys,
                       bint word) noexcept nogil:
    # n_tty's eraser: back from `count` to no further than `floor`, one whole
    # character (erase) or a word and what follows it (word-erase); what is
    # erased is zeroed.  Returns the new count.
    cdef Py_ssize_t head
    cdef Py_ssize_t seen = 0
    cdef unsigned char c
    while count > floor:
        head = count
        while True:
            head -= 1
            c = buf[head]
            if not (_continuation(keys, c) and head != floor):
                break
        if _continuation(keys, c):
            break                        # never part of a character
        if word:
            if _word_byte(c):
                seen += 1
            elif seen:
                break
        sodium.sodium_memzero(buf + head, <size_t>(count - head))
        count = head
        if not word:
            break
    return count


cdef Py_ssize_t _read_line(int fd, unsigned char *buf, const _Editing *keys, bint *eof) except -2:
    # read(2) one byte at a time into `buf` (_LINE_MAX bytes) until an
    # unquoted newline or carriage return (not stored), or end of file with
    # nothing typed since the last.  Returns the count, or _SIGNALLED or
    # _MODES_LOST.  A line of any length is read to its end (with echo off),
    # so that nothing of it is shown or reaches the next reader; the caller
    # refuses one that is too long.  The bytes only ever live in `buf`.
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t floor = 0          # erase and kill stop here (end of file inside the line)
    cdef unsigned char byte
    cdef bint literal = False
    cdef int waited
    while True:
        waited = _wait_for_input(fd)
        if waited != 0:
            return waited
        if read_retrying(fd, buf + count, 1, "read from the terminal") == 0:
            eof[0] = True               # the terminal is gone
            return count
        byte = buf[count]
        buf[count] = 0
        if literal:
            literal = False
        elif byte == keys.erase or byte == keys.werase:
            count = _erase(buf, count, floor, keys, byte == keys.werase and byte != keys.erase)
            continue
        elif byte == keys.kill:
            sodium.sodium_memzero(buf + floor, <size_t>(count - floor))
            count = floor
            continue
        elif byte == keys.lnext:
            literal = True
            continue
        elif byte == b'\n' or byte == b'\r':
            return count
        elif byte == keys.eof:
            if count == floor:
                eof[0] = True           # Ctrl-D with nothing typed since the line's start or the last one
                return count
            floor = count
            continue
        if count < _LINE_MAX - 1:
            buf[count] = byte
            count += 1


cdef int _editing_keys(list attributes, _Editing *keys) except -1:
    cdef list cc = attributes[6]
    cdef bint extended = (attributes[3] & termios.IEXTEN) != 0
    keys.erase = _key(cc, termios.VERASE)
    keys.kill = _key(cc, termios.VKILL)
    keys.eof = _key(cc, termios.VEOF)
    keys.werase = _key(cc, termios.VWERASE) if extended else -1
    keys.lnext = _key(cc, termios.VLNEXT) if extended else -1
    keys.utf8 = (attributes[0] & IUTF8) != 0
    return 0


cdef int _key(list cc, int index) noexcept:
    # A control character of the terminal, or -1 when it is disabled.
    value = cc[index]
    code = value[0] if isinstance(value, bytes) else value
    return -1 if code == 0 else code


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

    Echo is never left off: while the prompt is up, a signal whose action is
    the default one (it would stop or end the process: Ctrl-Z, Ctrl-\\,
    SIGTERM, SIGHUP, SIGUSR1, SIGTTOU in the background, a realtime signal,
    ...) waits until the terminal is restored, then acts as it would have;
    after `fg` (also after SIGSTOP) the prompt starts over, what was typed
    wiped.  A signal with a Python handler (Ctrl-C, an application's timer)
    runs it in place: if it raises, the terminal is restored on the way out;
    if it returns, the prompt goes on.  The line is edited here, byte by byte
    into guarded memory, by the rules of the kernel's own line editor with
    echo off (erase, word-erase, kill, literal-next, end of file as the
    terminal sets them; one difference: Ctrl-V cannot quote Enter or
    Ctrl-C), so no half-typed line waits in the kernel; a line longer than
    PASSWORD_MAX_BYTES is read to its end, then refused; a terminal left in
    raw mode still reads a line.  RuntimeError off the main thread (where Python
    handles signals) and from a signal handler during a prompt.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    # The main thread only: it is where Python runs signal handlers, and where
    # Ctrl-C ends the process; a prompt on another thread could be left
    # behind with echo off.  So prompts come one at a time, and only a signal
    # handler run during a prompt could start a second one.
    global _prompting
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("read_password() runs on the main thread only (where signals are handled: "
                           "a prompt on another thread could leave the terminal's echo off)")
    if _prompting:
        raise RuntimeError("read_password() is already prompting (called from a signal handler?)")
    if _forked_from_prompt:
        raise RuntimeError("read_password() in a process forked while its parent was prompting: the "
                           "terminal is the parent's, with its echo off")
    _prompting = True
    try:
        return _read_password(prompt)
    finally:
        _prompting = False


cdef SecureBuffer _read_password(str prompt):
    cdef SecureBuffer line = None
    cdef SecureBuffer result = None
    cdef Py_ssize_t count = 0
    cdef unsigned char *buf
    cdef bint eof = False
    cdef bint restore_later = False
    cdef _Editing keys
    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    try:
        line = SecureBuffer(_LINE_MAX)
        while True:
            count = _SIGNALLED
            restore_later = False
            _sync_deferred()   # before echo goes off: no moment without it
            try:
                try:
                    old = termios.tcgetattr(fd)
                except termios.error as exc:     # not an OSError subclass
                    raise OSError(*exc.args) from None
                new = list(old)
                new[6] = list(old[6])
                # Echo off, the line edited here (ICANON off, one byte per
                # read), Ctrl-C/Ctrl-Z/Ctrl-\ still signals (ISIG), Enter a
                # newline even after `stty raw` (ICRNL).
                new[3] = (new[3] & ~(termios.ECHO | termios.ICANON)) | termios.ISIG
                new[0] |= termios.ICRNL
                new[6][termios.VMIN] = 1
                new[6][termios.VTIME] = 0
                _editing_keys(old, &keys)
                if _try_set_terminal(fd, new):   # False: a signal came first (SIGTTOU in the background)
                    try:
                        buf = line.borrow_write()
                        try:
                            while True:
                                os.write(fd, prompt.encode())
                                count = _read_line(fd, buf, &keys, &eof)
                                if count != _SIGNALLED and count != _MODES_LOST:
                                    break
                                # The prompt starts over: what was typed goes.
                                sodium.sodium_memzero(buf, _LINE_MAX)
                                if count == _SIGNALLED or not _try_set_terminal(fd, new):
                                    count = _SIGNALLED
                                    break   # restore the terminal, deliver, then start over
                                # _MODES_LOST: continued after SIGSTOP; echo off again, in place
                        finally:
                            line.release_write()
                    finally:
                        # TCSAFLUSH also discards anything typed but not read, so that no
                        # part of an overlong line reaches the next reader of the terminal.
                        restore_later = not _try_set_terminal(fd, old)
                        os.write(fd, b"\n")     # the newline that echo did not show
            finally:
                _restore_signals()
                if restore_later:
                    _set_terminal(fd, old)   # with the previous actions: in the background, that stops us
                # Delivered even when the prompt ends in an exception (Ctrl-C
                # after a SIGTERM): no signal that came is lost.
                _deliver_pending(fd)
            if count != _SIGNALLED:
                break
            count = 0      # go on after fg: the prompt starts over
            eof = False
        if count > PASSWORD_MAX_BYTES:
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
