# Included by _memory.pyx: a forked child holds no usable key.
#
# Anonymous chunks are MADV_WIPEONFORK (zero in the child) and secretmem
# chunks MADV_DONTFORK (not mapped in the child).  On top of that, in two
# steps:
#   1. inside fork() itself, whoever calls it (os.fork, a C extension,
#      ctypes' libc fork), a pthread_atfork handler seals the parent's memory
#      in the child: anonymous chunks become PROT_NONE (a stale view dies on
#      touch instead of reading zeros), and the address ranges of secretmem
#      chunks, free in the child, are reserved PROT_NONE so that nothing the
#      child maps later can land under a stale view;
#   2. under the GIL, before the library next touches a buffer (at once for
#      os.fork), _after_fork_in_child() marks every buffer DESTROYED and
#      forgets the parent's chunks, pools and rings, so that the child never
#      reuses them; using a parent key is then fatal, naming fork().
# A fork made with the raw system call (syscall(SYS_fork), clone without
# CLONE_VM) runs no handler at all, and no code of ours runs in the child
# until it next enters the library: a wiped-on-fork marker page, which reads
# 0 in any child, catches it at step 2, which then does step 1 too.  Until
# then a stale view (a memoryview exported before the fork) of an anonymous
# chunk reads zeros, and one of a secretmem chunk faults on the hole, unless
# the child itself mapped something there meanwhile: that stays reachable
# through the stale view (the child's own ordinary memory, never a secret:
# no key of the child can be made before step 2 reserves the rest of the
# range).  The fault handler names fork() for both (_alive reads 0).

cdef int _forked = 0              # set by step 1, cleared by step 2
cdef Chunk *_inherited = NULL     # the parent's chunks, kept to name a fault
cdef unsigned char *_alive = NULL # a MADV_WIPEONFORK page holding 1: 0 in any child


cdef int _map_fork_marker() except -1:
    global _alive
    cdef void *page = mmap(NULL, _page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if page == MAP_FAILED:
        raise_errno("cannot map the fork marker", errno)
    if madvise(page, _page_size, MADV_WIPEONFORK) != 0:
        raise_errno("madvise(MADV_WIPEONFORK) of the fork marker", errno)
    _alive = <unsigned char *>page
    _alive[0] = 1
    return 0


cdef void _reserve_hole(unsigned char *start, size_t length) noexcept nogil:
    # PROT_NONE over the range of a parent's secretmem chunk, absent in the
    # child (MADV_DONTFORK), so that nothing mapped later (the child's own
    # keys first of all) can land under a stale view of it.  After a raw
    # fork, code that ran before the library was entered may already have
    # mapped something there, and one mapping over the whole range then
    # fails (EEXIST): each page still free is reserved on its own, and what
    # the child mapped there itself stays as it is (never replaced: it is
    # the child's, and holds nothing of the parent).
    cdef int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | system.MAP_FIXED_NOREPLACE
    cdef size_t offset = 0
    if mmap(start, length, PROT_NONE, flags, -1, 0) != MAP_FAILED:
        return
    while offset < length:
        mmap(start + offset, _page_size, PROT_NONE, flags, -1, 0)
        offset += _page_size


cdef void _seal_in_child() noexcept nogil:
    global _forked
    cdef Chunk *chunk = _chunks
    while chunk != NULL:
        # Best effort, as nothing can be reported from inside fork(): the
        # pages are zero or absent in the child whatever happens here.
        if chunk.backend == BACKEND_SODIUM:
            mprotect(chunk.base, chunk.length, PROT_NONE)
        else:
            _reserve_hole(chunk.base, chunk.length)
        chunk = chunk.next
    _forked = 1


cdef inline int _settle_fork() except -1:
    # Every entry point that touches a buffer or the allocator calls this.
    if _forked or _alive[0] == 0:
        _after_fork_in_child()
    return 0


cpdef void _after_fork_in_child() noexcept:
    # cpdef, as _fatal: _settle_fork() calls the C function, so replacing the
    # module attribute cannot leave a child using its parent's keys (zeros
    # after a raw fork) instead of dying; Python (os.register_at_fork, tests)
    # gets the def wrapper.
    global _chunks, _inherited, _pool_bytes, _mapped_bytes, _locked_bytes, _forked
    cdef void *node = _registry_head
    cdef SecureBuffer buf
    cdef int pages
    if _alive[0] == 0 and not _forked:
        _seal_in_child()          # a raw fork: no handler ran inside it
    if not _forked:
        return
    _inherited = _chunks          # the bookkeeping is leaked in the child on purpose
    _chunks = NULL
    for pages in range(_MAX_POOLED_PAGES + 1):
        _pool[BACKEND_SODIUM][pages] = NULL
        _pool[BACKEND_SECRETMEM][pages] = NULL
    _pool_bytes = 0
    _mapped_bytes = 0
    _locked_bytes = 0
    _forget_rings()
    while node != NULL:
        buf = <SecureBuffer>node
        buf._state = SK_DESTROYED
        buf._base = SK_DESTROYED
        buf._users = _DOOMED | _WIPED     # no user of the parent's is left here
        buf._c_slot = NULL
        node = buf._c_next
    _forked = 0
    _alive[0] = 1


_map_fork_marker()
if system.pthread_atfork(NULL, NULL, _seal_in_child) != 0:
    raise ImportError("securekeys: cannot register the fork handler (pthread_atfork)")
os.register_at_fork(after_in_child=_after_fork_in_child)
