# cython: language_level=3, embedsignature=True, auto_pickle=False
"""Reading a passphrase from the controlling terminal into guarded memory.

Terminal handling, not crypto: ``securekeys.crypto`` re-exports
``read_password`` (and ``PASSWORD_MAX_BYTES``) so that existing imports keep
working.  The passphrase goes from read(2) straight into a SecureBuffer; it
never exists as a str or bytes.
"""

import os
import termios

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from libc.string cimport memcpy

from securekeys._checks cimport raise_errno
from securekeys._fdio cimport read_retrying
from securekeys.includes cimport system
from securekeys._memory cimport SecureBuffer
from securekeys._wipe cimport wipe_stack_and_registers

PASSWORD_MAX_BYTES = 1024

cdef enum:
    _COPY_STACK = 1024    # memcpy and read(2)'s wrapper use a few hundred bytes of stack
    _SIGNAL_SLICE_MS = 100


cdef int _wait_for_input(int fd) except -1:
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
    # read(2) one byte at a time into `buf` until a newline (not stored), end
    # of file, or `cap` bytes.  Returns the count, or -1 when the line is
    # longer than `cap`; `eof` tells whether input ended without a newline.
    # One byte at a time so that nothing after the newline is consumed; the
    # bytes only ever live in `buf` (guarded memory).
    cdef Py_ssize_t count = 0
    while True:
        _wait_for_input(fd)
        if read_retrying(fd, buf + count, 1, "read from the terminal") == 0:
            eof[0] = True               # end of file (Ctrl-D)
            return count
        if buf[count] == b'\n':
            buf[count] = 0
            return count
        count += 1
        if count == cap:
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
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    cdef SecureBuffer line = None
    cdef SecureBuffer result = None
    cdef Py_ssize_t count = 0
    cdef unsigned char *buf
    cdef bint eof = False
    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    try:
        try:
            old = termios.tcgetattr(fd)
            new = list(old)
            new[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)
        except termios.error as exc:     # not an OSError subclass
            raise OSError(*exc.args) from None
        try:
            os.write(fd, prompt.encode())
            line = SecureBuffer(PASSWORD_MAX_BYTES)
            buf = line.borrow_write()
            try:
                count = _read_line(fd, buf, PASSWORD_MAX_BYTES, &eof)
            finally:
                line.release_write()
        finally:
            # TCSAFLUSH also discards anything typed but not read, so that no
            # part of an overlong line reaches the next reader of the terminal.
            termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            os.write(fd, b"\n")     # the newline that echo did not show
        if count < 0:
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
