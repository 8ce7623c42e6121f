# Included by _memory.pyx: the fatal path.
#
# Misuse of a key ends the process: this is the one place
# where that happens for everything the library can see from Python.

cdef void _write_stderr(const char *text) noexcept nogil:
    cdef size_t left = strlen(text)
    cdef ssize_t n
    while left > 0:
        n = write(2, text, left)
        if n <= 0:
            if n < 0 and errno == EINTR:
                continue
            return
        text += n
        left -= <size_t>n


cdef void _fatal_c(const char *what) noexcept:
    # Say why, then wipe every other live secret before dying (memguard's
    # SafePanic): an abort may leave a core file or a debugger attached.
    _write_stderr(b"securekeys: fatal: ")
    _write_stderr(what)
    _write_stderr(b"\n")
    _wipe_registry()
    abort()


def _fatal(str what):
    """Write `securekeys: fatal: <what>` to stderr, wipe all keys and abort."""
    _fatal_c(what.encode("utf-8", "replace"))


cdef void _on_sodium_misuse() noexcept with gil:
    _fatal_c(b"libsodium reported misuse of its API")
