# Included by _memory.pyx: hooks for hardening.py, report(), tests and benchmarks.

def _get_dumpable():
    """Whether this process may dump core or be ptraced (prctl PR_GET_DUMPABLE)."""
    cdef int rc = system.prctl(system.PR_GET_DUMPABLE, 0, 0, 0, 0)
    if rc < 0:
        raise_errno("prctl(PR_GET_DUMPABLE)", errno)
    return rc != 0


def _set_dumpable(bint dumpable):
    """prctl(PR_SET_DUMPABLE): 0 keeps core dumps and ptrace by other users out."""
    if system.prctl(system.PR_SET_DUMPABLE, 1 if dumpable else 0, 0, 0, 0) != 0:
        raise_errno("prctl(PR_SET_DUMPABLE)", errno)


def _sodium_malloc_cycle(size_t size):
    """sodium_malloc + sodium_free of `size` bytes: the benchmark's baseline."""
    cdef void *p = sodium.sodium_malloc(size)
    if p == NULL:
        raise MemoryError("sodium_malloc failed")
    sodium.sodium_free(p)


def _set_pool_limit(size_t limit):
    """Set the pool's bound in bytes (for tests and tuning); return the old one."""
    global _pool_limit
    _settle_fork()     # trimming must never unmap a range the parent held
    old = _pool_limit
    _pool_limit = limit
    _pool_trim()
    return old


def _allocator_stats():
    """Numbers for report(): backend, policy, pool and lock accounting."""
    _settle_fork()
    _require_backend()
    cdef void *node = _registry_head
    cdef SecureBuffer buf
    cdef Py_ssize_t unlocked = 0
    cdef Chunk *chunk = _chunks
    cdef Py_ssize_t chunks = 0
    while node != NULL:
        buf = <SecureBuffer>node
        if buf._c_slot != NULL and not (<Slot *>buf._c_slot).locked:
            unlocked += 1
        node = buf._c_next
    while chunk != NULL:
        chunks += 1
        chunk = chunk.next
    return {
        "backend": _BACKENDS[_backend],
        "lock_policy": _POLICIES[_lock_policy],
        "live_buffers": _registry_count,
        "unlocked_buffers": unlocked,
        "locked_bytes": _locked_bytes,
        "mapped_bytes": _mapped_bytes,
        "chunks": chunks,
        "pool_bytes": _pool_bytes,
        "pool_limit": _pool_limit,
        "huge_page_slots": _huge_slots,
    }


def _users_in_flight(SecureBuffer buf not None):
    """How many counted users (C borrows, fills) are using `buf` now: a race
    test waits for this to rise before it strikes, instead of sleeping."""
    return _in_flight(buf)
