# Included by _memory.pyx: the lock policy and the backend, chosen per process.

cdef enum:
    BACKEND_SODIUM = 0             # anonymous private memory
    BACKEND_SECRETMEM = 1          # memfd_secret(2): out of the kernel's direct map
    POLICY_BEST_EFFORT = 0
    POLICY_WARN = 1
    POLICY_REQUIRE = 2

cdef tuple _BACKENDS = ("sodium", "secretmem")
cdef tuple _POLICIES = ("best-effort", "warn", "require")
cdef int _backend = BACKEND_SODIUM
cdef object _backend_refusal = None   # why SECUREKEYS_BACKEND cannot be honoured
cdef int _lock_policy = POLICY_BEST_EFFORT
cdef bint _warned_unlocked = False


cdef int _apply_lock_policy(bint locked) except -1:
    global _warned_unlocked
    if locked:
        return 0
    if _lock_policy == POLICY_REQUIRE:
        raise LockError("cannot lock guarded memory (RLIMIT_MEMLOCK reached?) "
                        "and the lock policy is 'require'")
    if _lock_policy == POLICY_WARN and not _warned_unlocked:
        _warned_unlocked = True
        warnings.warn("securekeys: guarded memory could not be locked; secrets may be "
                      "swapped to disk (raise RLIMIT_MEMLOCK)", SecurityWarning, stacklevel=4)
    return 0


def set_lock_policy(policy):
    """What to do when guarded memory cannot be mlocked.

    "best-effort" (default): allocate anyway; the buffer's `locked` is False.
    "warn": the same, with a SecurityWarning once per process.
    "require": raise LockError (a MemoryError) and allocate nothing.
    """
    global _lock_policy
    if policy not in _POLICIES:
        raise ValueError(f"lock policy must be one of {', '.join(map(repr, _POLICIES))}, not {policy!r}")
    _lock_policy = _POLICIES.index(policy)


def get_lock_policy():
    """The current lock policy."""
    return _POLICIES[_lock_policy]


def set_backend(name):
    """Where new secure buffers live: "sodium" (default) or "secretmem".

    "secretmem" uses memfd_secret(2): pages removed from the kernel's direct
    map.  OSError when this kernel does not offer it.  Existing buffers stay
    where they are.
    """
    global _backend, _backend_refusal
    if name not in _BACKENDS:
        raise ValueError(f"backend must be 'sodium' or 'secretmem', not {name!r}")
    cdef int fd
    if name == "secretmem":
        fd = system.memfd_secret()
        if fd < 0:
            err = errno
            raise OSError(err, f"the secretmem backend is unavailable: memfd_secret(2) "
                               f"failed: {strerror(err).decode()}")
        close(fd)
    _backend = _BACKENDS.index(name)
    _backend_refusal = None


cdef inline int _require_backend() except -1:
    # Every allocation starts here: a SECUREKEYS_BACKEND that could not be
    # had at start-up is an error now (with the message it had then).
    if _backend_refusal is not None:
        raise type(_backend_refusal)(*_backend_refusal.args)
    return 0


def get_backend():
    """The backend new secure buffers are allocated on."""
    return _BACKENDS[_backend]
