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
