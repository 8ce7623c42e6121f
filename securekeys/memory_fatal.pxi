# Included by _memory.pyx: the fatal path.
#
# Misuse of a key ends the process, always through _fatal_c(): the library's
# own checks (_fatal), libsodium's misuse handler, and a fault the MMU raises
# on guarded memory (memory_faults.pxi, through _die_of).  The order is what
# makes it safe:
#   1. wipe every live secret (memguard's SafePanic), with a wipe that cannot
#      fail (_wipe_all_chunks, in memory_slots.pxi);
#   2. say why in one line, without ever blocking: a full pipe or a paused
#      terminal on stderr must not keep the process alive, nor SIGPIPE kill it
#      before the abort;
#   3. abort() (a fault instead dies of its own signal).
# Everything here is async-signal-safe and runs without the GIL, because the
# fault handler runs it.

cdef extern from "stdatomic.h" nogil:
    # Set once, by the first thread on its way out.
    ctypedef int atomic_int "atomic_int"
    int atomic_exchange(atomic_int *obj, int desired)

cdef atomic_int _dying = 0

cdef enum:
    _FATAL_LINE_MAX = 512


cdef void _say_one_line(const char *first, const char *second) noexcept nogil:
    # `securekeys: fatal: <first><second>\n`, control characters shown as '?'
    # so that it stays one line whatever they hold (a class name can hold "\n").
    cdef char line[_FATAL_LINE_MAX]
    cdef const char *prefix = b"securekeys: fatal: "
    cdef const char *parts[2]
    cdef const char *text
    cdef size_t n = strlen(prefix)
    cdef size_t sent = 0
    cdef ssize_t wrote
    cdef unsigned char c
    cdef int i
    cdef system.pollfd stderr_fd
    memcpy(line, prefix, n)
    parts[0] = first
    parts[1] = second
    for i in range(2):
        text = parts[i]
        while text[0] != 0 and n < _FATAL_LINE_MAX - 1:
            c = <unsigned char>text[0]
            line[n] = b'?' if c < 0x20 or c == 0x7f else <char>c
            n += 1
            text += 1
    line[n] = b'\n'
    n += 1
    signal(SIGPIPE, SIG_IGN)    # a closed stderr is EPIPE, not death by SIGPIPE
    stderr_fd.fd = 2
    stderr_fd.events = system.POLLOUT
    while sent < n:
        # Only ever write what stderr can take now (a pipe with room for one
        # line takes it whole: it is shorter than PIPE_BUF).
        if system.poll(&stderr_fd, 1, 0) != 1 or not (stderr_fd.revents & system.POLLOUT):
            return
        wrote = write(2, line + sent, n - sent)
        if wrote <= 0:
            if wrote < 0 and errno == EINTR:
                continue
            return
        sent += <size_t>wrote


cdef void _die_of(const char *first, const char *second) noexcept nogil:
    # Steps 1 and 2: wipe, then say.  The caller then dies (abort(), or the
    # signal of a fault).
    if atomic_exchange(&_dying, 1) != 0:
        # Another thread is already on its way out: wait for it to end us.
        while True:
            pause()
    _wipe_all_chunks()
    _say_one_line(first, second)


cdef void _fatal_c(const char *what) noexcept nogil:
    _die_of(what, b"")
    abort()


def _fatal(str what):
    """Wipe all keys, write `securekeys: fatal: <what>` to stderr and abort."""
    _fatal_c(what.encode("utf-8", "replace"))


cdef void _on_sodium_misuse() noexcept nogil:
    _fatal_c(b"libsodium reported misuse of its API")
