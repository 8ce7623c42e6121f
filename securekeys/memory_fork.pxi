# Included by _memory.pyx: the fork hook.
#
# fork(): the child holds no usable key.  Anonymous chunks are
# MADV_WIPEONFORK (zero in the child) and secretmem chunks MADV_DONTFORK (not
# mapped in the child); on top of that, this hook makes every chunk PROT_NONE
# in the child (stale views die), marks every buffer DESTROYED, and forgets
# the parent's memory so that the child never frees or reuses it.

def _after_fork_in_child():
    global _chunks, _pool_bytes, _mapped_bytes, _locked_bytes
    cdef Chunk *chunk = _chunks
    cdef void *node = _registry_head
    cdef SecureBuffer buf
    cdef int pages
    while chunk != NULL:
        if chunk.backend == BACKEND_SODIUM and mprotect(chunk.base, chunk.length, PROT_NONE) != 0:
            _fatal_c(b"cannot seal the parent's keys in a forked child")
        chunk = chunk.next      # the bookkeeping is leaked in the child on purpose
    _chunks = NULL
    for pages in range(_MAX_POOLED_PAGES + 1):
        _pool[BACKEND_SODIUM][pages] = NULL
        _pool[BACKEND_SECRETMEM][pages] = NULL
    _pool_bytes = _mapped_bytes = _locked_bytes = 0
    _forget_rings()
    while node != NULL:
        buf = <SecureBuffer>node
        buf._state = buf._base = SK_DESTROYED
        buf._c_slot = NULL
        node = buf._c_next


os.register_at_fork(after_in_child=_after_fork_in_child)
