# Internal: the one read(2) loop of securekeys, cimported by its own
# extension modules only (`cdef inline`, so it is part of no module's ABI).
# readinto(), the end-of-file probe and read_password() all read through it.
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EINTR
from posix.unistd cimport read

from securekeys._checks cimport raise_errno


cdef inline ssize_t read_retrying(int fd, unsigned char *buf, size_t n, str what) except -1:
    # One read(2) of up to `n` bytes into `buf`, with the GIL released.  EINTR
    # runs Python's signal handlers (Ctrl-C raises here) and reads again; any
    # other error raises through raise_errno(what, errno).  Returns the count
    # read, 0 at end of file.
    cdef ssize_t got
    cdef int err = 0
    while True:
        with nogil:
            got = read(fd, buf, n)
            if got < 0:
                err = errno
        if got >= 0:
            return got
        if err != EINTR:
            return raise_errno(what, err)
        PyErr_CheckSignals()
