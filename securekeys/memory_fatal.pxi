# Included by _memory.pyx: the fatal path.
#
# Misuse of a key ends the process, always through _fatal_c(): the library's
# own checks (_fatal, a cpdef that Python cannot replace for them), libsodium's
# misuse handler, and a fault the MMU raises on guarded memory
# (memory_faults.pxi, through _die_of).  The order is what makes it safe:
#   1. wipe every live secret (memguard's SafePanic), with a wipe that cannot
#      fail (_wipe_all_chunks, in memory_slots.pxi);
#   2. say why in one line, without ever blocking: a full pipe or a paused
#      terminal on stderr must not keep the process alive, nor SIGPIPE kill it
#      before the abort;
#   3. abort() (a fault instead dies of its own signal).
# Everything here is async-signal-safe and runs without the GIL, because the
# fault handler runs it.

cdef extern from "stdatomic.h" nogil:
    ctypedef int atomic_int "atomic_int"
    ctypedef long atomic_long "atomic_long"
    int atomic_exchange(atomic_int *obj, int desired)
    int atomic_load(atomic_int *obj)
    int atomic_fetch_add(atomic_int *obj, int arg)
    int atomic_fetch_sub(atomic_int *obj, int arg)
    void atomic_store_long "atomic_store" (atomic_long *obj, long desired)
    long atomic_load_long "atomic_load" (atomic_long *obj)

cdef atomic_int _dying = 0          # set once, by the first thread on its way out
cdef atomic_long _dying_thread = 0  # ... whose thread id this is
cdef atomic_int _protecting = 0     # the library's protection changes in flight (_mprotect)

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
    signal(SIGTTOU, SIG_IGN)    # a background job may write to its terminal, not stop
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
    cdef long spins = 0
    if atomic_exchange(&_dying, 1) != 0:
        if atomic_load_long(&_dying_thread) == system.gettid():
            return      # a fault inside our own wipe: die of it now
        while True:     # another thread is on its way out: wait for it to end us
            pause()
    atomic_store_long(&_dying_thread, system.gettid())
    # No protection change of the library starts from now on (_mprotect);
    # let those already under way finish, so that none lands mid-wipe.
    while atomic_load(&_protecting) > 0 and spins < 10000000:
        system.sched_yield()
        spins += 1
    _wipe_all_chunks()
    _say_one_line(first, second)


cdef void _fatal_c(const char *what) noexcept nogil:
    _die_of(what, b"")
    abort()


cpdef void _fatal(str what) noexcept:
    """Wipe all keys, write `securekeys: fatal: <what>` to stderr and abort."""
    # cpdef, not def: the library's own checks call the C function directly,
    # never through the module's globals, so replacing `_memory._fatal` from
    # Python changes what Python callers get and nothing else (a def would be
    # looked up by name at each call: `_memory._fatal = print` would turn
    # every misuse into a printed line).  noexcept: nothing here may turn the
    # way out into an exception a caller could catch.
    cdef bytes line = None
    try:
        # ASCII with escapes: no Unicode line separator (U+2028, U+0085) can
        # split the line, and cutting it short never cuts a character in half.
        line = what.encode("ascii", "backslashreplace")
    except BaseException:
        pass    # None, or no memory for the line: die all the same
    if line is None:
        _fatal_c(b"misuse (the reason could not be written)")
    _fatal_c(line)


cdef int _mprotect(void *start, size_t length, int prot) noexcept nogil:
    # Every protection change the library makes outside the fatal path goes
    # through here: none starts once the process is dying (the thread waits
    # for the end instead), so the fatal wipe never races one.
    cdef int rc
    atomic_fetch_add(&_protecting, 1)
    if atomic_load(&_dying):
        atomic_fetch_sub(&_protecting, 1)
        while True:
            pause()
    rc = mprotect(start, length, prot)
    atomic_fetch_sub(&_protecting, 1)
    return rc


cdef void _on_sodium_misuse() noexcept nogil:
    _fatal_c(b"libsodium reported misuse of its API")
