# Included by _memory.pyx: reading from a file descriptor into guarded memory.
#
# Every read goes through _fdio.read_retrying, the project's one read(2) loop.

cdef size_t _fill_from_fd(SecureBuffer buf, int fd) except? 0:
    # read(2) straight into the buffer until it is full or the file ends;
    # short reads continue where they stopped.  Returns the count read.
    cdef size_t done = 0
    cdef ssize_t got
    while done < buf._size:
        got = read_retrying(fd, buf._c_data + done, buf._size - done,
                            "read into a secure buffer")
        if got == 0:
            break
        done += <size_t>got
    return done


def _at_eof(int fd):
    """True when `fd` is at end of file, proven by one more read(2).

    The probe byte lands in C stack memory and is wiped, never in a Python
    object: if the file was longer than expected, that byte is key material.
    """
    cdef unsigned char probe = 0
    cdef ssize_t got
    try:
        got = read_retrying(fd, &probe, 1, "read")
    finally:
        sodium.sodium_memzero(&probe, 1)
    return got == 0


RESOLVE_NO_XDEV = system.RESOLVE_NO_XDEV
RESOLVE_NO_MAGICLINKS = system.RESOLVE_NO_MAGICLINKS
RESOLVE_NO_SYMLINKS = system.RESOLVE_NO_SYMLINKS
RESOLVE_BENEATH = system.RESOLVE_BENEATH


def _openat2(int dir_fd, path, int flags, unsigned long long resolve):
    """openat2(2): open `path` (str or bytes) relative to `dir_fd` under the
    RESOLVE_* restrictions; the new fd, or OSError naming `path` (ELOOP: a
    forbidden link; ENOSYS: a kernel older than Linux 5.6)."""
    cdef bytes encoded = os.fsencode(path)
    cdef const char *c_path = encoded
    cdef int fd
    with nogil:
        fd = system.openat2(dir_fd, c_path, flags, resolve)
    if fd < 0:
        err = errno
        raise OSError(err, strerror(err).decode("utf-8", "replace"), path)
    return fd
