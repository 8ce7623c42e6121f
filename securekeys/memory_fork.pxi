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
# A fork made with the raw system call runs no handler at all: a wiped-on-
# fork marker page, which reads 0 in any child, catches it at step 2, which
# then does step 1 too (a stale view reads zeros until then).

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


cdef void _seal_in_child() noexcept nogil:
    global _forked
    cdef Chunk *chunk = _chunks
    while chunk != NULL:
        # Best effort, as nothing can be reported from inside fork(): the
        # pages are zero or absent in the child whatever happens here.
        if chunk.backend == BACKEND_SODIUM:
            mprotect(chunk.base, chunk.length, PROT_NONE)
        else:
            mmap(chunk.base, chunk.length, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | system.MAP_FIXED_NOREPLACE, -1, 0)
        chunk = chunk.next
    _forked = 1


cdef inline int _settle_fork() except -1:
    # Every entry point that touches a buffer or the allocator calls this.
    if _forked or _alive[0] == 0:
        _after_fork_in_child()
    return 0


def _after_fork_in_child():
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
