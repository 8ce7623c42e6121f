# Included by _memory.pyx: chunks, slots, the pool and KeyRing runs.
#
# The layout they follow is drawn in memory_layout.pxi.

cdef void *_map_anonymous(size_t length) noexcept nogil:
    # PROT_NONE anonymous memory.  A chunk of huge slots ([guard][slot][guard],
    # the slot a multiple of the huge page size) is placed so that its slot
    # starts on a huge page boundary: over-mapped by one huge page, then the
    # head and tail trimmed (unmapping the ends of a fresh mapping cannot fail
    # for want of a mapping).
    cdef size_t extra = _huge_page_size if _huge_slots_on and length > _huge_page_size else 0
    cdef unsigned char *raw = <unsigned char *>mmap(NULL, length + extra, PROT_NONE,
                                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    cdef unsigned char *base
    if raw == <unsigned char *>MAP_FAILED or extra == 0:
        return raw
    base = <unsigned char *>((<uintptr_t>(raw + _page_size) + _huge_page_size - 1)
                             & ~(<uintptr_t>_huge_page_size - 1)) - _page_size
    if base > raw:
        munmap(raw, <size_t>(base - raw))
    if raw + length + extra > base + length:
        munmap(base + length, <size_t>(raw + length + extra - (base + length)))
    return base


cdef unsigned char *_map_guarded(size_t length, int backend, bint *locked) except NULL:
    """Map `length` bytes PROT_NONE, never dumped, wiped or unmapped on fork,
    and mlock2(MLOCK_ONFAULT)ed when RLIMIT_MEMLOCK allows (`locked`)."""
    cdef void *base
    cdef int fd = -1, err = 0
    if backend == BACKEND_SECRETMEM:
        fd = system.memfd_secret()
        if fd < 0:
            raise_errno("memfd_secret", errno)
        if ftruncate(fd, length) != 0:
            err = errno
            close(fd)
            raise_errno("ftruncate of secret memory", err)
        base = mmap(NULL, length, PROT_NONE, MAP_SHARED, fd, 0)
        err = errno
        close(fd)
    else:
        base = _map_anonymous(length)
        err = errno
    if base == MAP_FAILED:
        if backend == BACKEND_SECRETMEM and err == EAGAIN:
            # secretmem is always locked: past RLIMIT_MEMLOCK there is no
            # unlocked fallback, whatever the lock policy.
            raise LockError(f"cannot map {length} bytes of secret memory: RLIMIT_MEMLOCK "
                            f"is exhausted (secretmem is always locked)")
        raise_errno(f"cannot map {length} bytes of guarded memory", err)
    try:
        if madvise(base, length, MADV_DONTDUMP) != 0:
            raise_errno("madvise(MADV_DONTDUMP)", errno)
        # Keys must not survive fork(): anonymous pages read as zero in the
        # child; secretmem cannot be wiped that way, so it is not inherited.
        if madvise(base, length, MADV_WIPEONFORK if backend == BACKEND_SODIUM else MADV_DONTFORK) != 0:
            raise_errno("madvise(MADV_WIPEONFORK/MADV_DONTFORK)", errno)
        if backend == BACKEND_SECRETMEM:
            # The kernel locks secretmem itself (VM_LOCKED, charged to
            # RLIMIT_MEMLOCK by the mmap above, which fails past the limit).
            locked[0] = True
        else:
            locked[0] = mlock2(base, length, MLOCK_ONFAULT) == 0
            if not locked[0] and not _lockable_error(errno):
                raise_errno("mlock2", errno)
    except BaseException:
        munmap(base, length)
        raise
    return <unsigned char *>base


cdef Chunk *_new_chunk(size_t length, size_t slot_count, int backend) except NULL:
    cdef bint locked = False
    cdef unsigned char *base = _map_guarded(length, backend, &locked)
    cdef Chunk *chunk = <Chunk *>calloc(1, sizeof(Chunk))
    if chunk != NULL:
        chunk.slots = <Slot *>calloc(slot_count, sizeof(Slot))
    if chunk == NULL or chunk.slots == NULL:
        free(chunk)
        munmap(base, length)
        raise MemoryError("cannot allocate guarded memory bookkeeping")
    chunk.base = base
    chunk.length = length
    chunk.count = slot_count
    chunk.backend = backend
    chunk.locked = locked
    _link_chunk(chunk)
    return chunk


cdef Chunk *_map_chunk(size_t slot_pages, size_t count, int backend) except NULL:
    """A chunk of `count` slots of `slot_pages` pages, guards shared between them."""
    global _huge_slots
    cdef Chunk *chunk = _new_chunk((count * (slot_pages + 1) + 1) * _page_size, count, backend)
    cdef size_t i
    if _huge_slots_on and backend == BACKEND_SODIUM and slot_pages % _HUGE_PAGE_PAGES == 0:
        # Best effort by design: without transparent huge pages (EINVAL) the
        # slot works the same, with 4 KiB pages.
        if madvise(chunk.base + _page_size, slot_pages * _page_size, MADV_HUGEPAGE) == 0:
            _huge_slots += 1
    chunk.slot_pages = slot_pages
    for i in range(count):
        chunk.slots[i].chunk = chunk
        chunk.slots[i].start = chunk.base + (1 + i * (slot_pages + 1)) * _page_size
        chunk.slots[i].length = slot_pages * _page_size
        chunk.slots[i].locked = chunk.locked
    return chunk


cdef void _link_chunk(Chunk *chunk) noexcept:
    global _chunks, _mapped_bytes, _locked_bytes
    chunk.next = _chunks
    if _chunks != NULL:
        _chunks.prev = chunk
    _chunks = chunk
    _mapped_bytes += chunk.length
    if chunk.locked:
        _locked_bytes += chunk.length


cdef void _unmap_chunk(Chunk *chunk) noexcept:
    global _chunks, _mapped_bytes, _locked_bytes
    cdef size_t i
    for i in range(chunk.count):
        if chunk.slots[i].free:
            _pool_remove(&chunk.slots[i])
        if chunk.slots[i].locked and not chunk.locked:   # locked on its own
            _locked_bytes -= chunk.slots[i].length
    if chunk.pages != NULL:
        free(chunk.pages)
    if chunk.prev != NULL:
        chunk.prev.next = chunk.next
    else:
        _chunks = chunk.next
    if chunk.next != NULL:
        chunk.next.prev = chunk.prev
    _mapped_bytes -= chunk.length
    if chunk.locked:
        _locked_bytes -= chunk.length
    if munmap(chunk.base, chunk.length) != 0:
        _fatal_c(b"munmap of guarded memory failed")
    free(chunk.slots)
    free(chunk)


cdef inline void _pool_push(Slot *slot) noexcept:
    global _pool_bytes
    cdef Slot **head = &_pool[slot.chunk.backend][slot.chunk.slot_pages]
    slot.free = True
    slot.prev_free = NULL
    slot.next_free = head[0]
    if head[0] != NULL:
        head[0].prev_free = slot
    head[0] = slot
    _pool_bytes += slot.length


cdef inline void _pool_remove(Slot *slot) noexcept:
    global _pool_bytes
    cdef Slot **head = &_pool[slot.chunk.backend][slot.chunk.slot_pages]
    if slot.prev_free != NULL:
        slot.prev_free.next_free = slot.next_free
    else:
        head[0] = slot.next_free
    if slot.next_free != NULL:
        slot.next_free.prev_free = slot.prev_free
    slot.free = False
    slot.prev_free = slot.next_free = NULL
    _pool_bytes -= slot.length


cdef Slot *_slot_take(size_t size, unsigned char **data) except NULL:
    """A zero-filled READWRITE slot whose last `size` bytes are the data."""
    global _locked_bytes
    _require_backend()
    cdef size_t pages = (size + _CANARY_SIZE + _page_size - 1) // _page_size
    cdef Slot *slot = NULL
    cdef Chunk *chunk
    cdef Chunk *fresh = NULL       # a chunk mapped by this very call
    cdef size_t i
    cdef bint writable_while_free = False
    if _huge_slots_on and pages >= _HUGE_SLOT_MIN_PAGES and _backend == BACKEND_SODIUM:
        # Large secrets get whole huge pages: one page-table entry for each
        # mprotect instead of one per 4 KiB (measured: 1.7 us against 24 us
        # for 1 MiB), at the cost of up to a huge page of locked memory.
        pages = (pages + _HUGE_PAGE_PAGES - 1) // _HUGE_PAGE_PAGES * _HUGE_PAGE_PAGES
    if pages <= _MAX_POOLED_PAGES:
        slot = _pool[_backend][pages]
        if slot == NULL:
            # secretmem is charged to RLIMIT_MEMLOCK whole at mmap: smaller chunks
            chunk = _map_chunk(pages, max(1, (_SLOTS_PER_SMALL_CHUNK if _backend == BACKEND_SODIUM
                                              else _SLOTS_PER_SECRET_CHUNK) // pages), _backend)
            for i in reversed(range(chunk.count)):
                _pool_push(&chunk.slots[i])
            slot = _pool[_backend][pages]
            fresh = chunk
        _pool_remove(slot)
    else:
        slot = &_map_chunk(pages, 1, _backend).slots[0]
    slot.chunk.in_use += 1
    slot.wiped = False
    try:
        if not slot.locked:
            # The chunk could not be locked whole: lock this slot alone.
            if mlock2(slot.start, slot.length, MLOCK_ONFAULT) == 0:
                slot.locked = True
                _locked_bytes += slot.length
            elif not _lockable_error(errno):
                raise_errno("mlock2", errno)
        _apply_lock_policy(slot.locked)
        if slot.level != SK_READWRITE:
            if _mprotect(slot.start, slot.length, PROT_READ | PROT_WRITE) != 0:
                raise_errno("mprotect", errno)
            slot.level = SK_READWRITE
        else:
            writable_while_free = True
    except BaseException:
        if fresh != NULL:
            # A refusal ("require" with no lock) leaves no mapping behind.
            fresh.in_use -= 1
            _unmap_chunk(fresh)
        else:
            _slot_give_back(slot)
        raise
    data[0] = slot.start + slot.length - size
    slot.canary = data[0] - _CANARY_SIZE
    if writable_while_free:
        # Whatever a stray write may have left in a writable free slot, a new
        # buffer starts zero-filled.  (A PROT_NONE one is zero already.)
        memset(slot.canary, 0, _CANARY_SIZE + size)
    memcpy(slot.canary, _canary, _CANARY_SIZE)
    return slot


cdef inline int _slot_protect(Slot *slot, int level) noexcept nogil:
    if slot.page != NULL:
        return _ring_page_change(slot, level)
    if _mprotect(slot.start, slot.length, _prot(level)) != 0:
        return -1
    slot.level = level
    return 0


cdef void _slot_wipe(Slot *slot, unsigned char *data, size_t size, int current,
                     bint unreachable) noexcept:
    """Check the canary, zero canary and data.  `current` is the protection in
    force (one mprotect saved when READWRITE).  The slot is left PROT_NONE,
    unless `unreachable` (no view or borrow can reach it any more) and it is
    small: then it stays READWRITE, zeroed, saving the two mprotect calls a
    key life would otherwise spend here and in the next _slot_take()."""
    if slot.page != NULL:
        _ring_wipe(slot, data, size)
        return
    cdef bint writable = current == SK_READWRITE
    if not writable and _protect_to_wipe(slot.start, slot.length, PROT_READ | PROT_WRITE) == 0:
        writable = True
        slot.level = SK_READWRITE
    if writable:
        if sodium.sodium_memcmp(slot.canary, _canary, _CANARY_SIZE) != 0:
            _fatal_c(b"the canary before a secure buffer was overwritten "
                     b"(a write ran past the start of the buffer)")
        sodium.sodium_memzero(slot.canary, _CANARY_SIZE + size)
    elif _zero_through_proc(slot.canary, _CANARY_SIZE + size) != 0:
        # At vm.max_map_count even with the spares: zeroed without a mapping.
        _fatal_c(b"cannot wipe a secure buffer")
    slot.wiped = True
    if not writable or not unreachable or slot.chunk.slot_pages > _WRITABLE_FREE_MAX_PAGES:
        # Lowering a slot between its guard pages to PROT_NONE merges
        # mappings: it never needs a spare.
        if slot.level != SK_NOACCESS:
            if _protect_to_wipe(slot.start, slot.length, PROT_NONE) != 0:
                _fatal_c(b"cannot make a wiped secure buffer inaccessible")
            slot.level = SK_NOACCESS
    _take_spares()


cdef void _slot_give_back(Slot *slot) noexcept:
    """Return a wiped PROT_NONE slot whose owner is gone to the pool."""
    if slot.page != NULL:
        _ring_give_back(slot)
        return
    cdef Chunk *chunk = slot.chunk
    chunk.in_use -= 1
    if chunk.slot_pages > _MAX_POOLED_PAGES:
        _unmap_chunk(chunk)
        return
    _pool_push(slot)
    if _pool_bytes > _pool_limit and chunk.in_use == 0:
        _unmap_chunk(chunk)


cdef void _pool_trim() noexcept:
    # Unmap wholly free chunks until the pool is within its bound.
    cdef Chunk *chunk = _chunks
    cdef Chunk *next_chunk
    while chunk != NULL and _pool_bytes > _pool_limit:
        next_chunk = chunk.next
        if chunk.ring == NULL and chunk.in_use == 0:
            _unmap_chunk(chunk)
        chunk = next_chunk


# ---------------------------------------------------------------------------
# KeyRing runs: slots that share pages.


cdef Ring *_rings = NULL


cdef inline int _ring_target(RingPage *page) noexcept nogil:
    if page.counts[SK_READWRITE] > 0:
        return SK_READWRITE
    if page.counts[SK_READONLY] > 0:
        return SK_READONLY
    return SK_NOACCESS


cdef int _ring_page_set(RingPage *page, int level, bint wiping) noexcept nogil:
    # A lowering, and any change for a wipe (`wiping`), may use the spare
    # mappings at the limit (memory_wipe.pxi).
    cdef int rc
    if level == page.level:
        return 0
    if wiping or level < page.level:
        rc = _protect_to_wipe(page.start, _page_size, _prot(level))
    else:
        rc = _mprotect(page.start, _page_size, _prot(level))
    if rc != 0:
        return -1
    page.level = level
    return 0


cdef int _ring_page_change(Slot *slot, int level) noexcept nogil:
    cdef RingPage *page = slot.page
    cdef int old = slot.level
    page.counts[old] -= 1
    page.counts[level] += 1
    if _ring_page_set(page, _ring_target(page), False) != 0:
        page.counts[level] -= 1
        page.counts[old] += 1
        return -1
    slot.level = level
    return 0


cdef int _ring_grow(Ring *ring) except -1:
    cdef Chunk *chunk = _new_chunk((_RING_RUN_PAGES + 2) * _page_size,
                                   _RING_RUN_PAGES * ring.per_page, ring.backend)
    cdef size_t p, k
    cdef Slot *slot
    cdef RingPage *page
    chunk.ring = ring
    chunk.pages = <RingPage *>calloc(_RING_RUN_PAGES, sizeof(RingPage))
    if chunk.pages == NULL:
        _unmap_chunk(chunk)
        raise MemoryError("cannot allocate KeyRing bookkeeping")
    for p in range(_RING_RUN_PAGES):
        page = &chunk.pages[p]
        page.start = chunk.base + (1 + p) * _page_size
        page.level = SK_NOACCESS
        for k in range(ring.per_page):
            slot = &chunk.slots[p * ring.per_page + k]
            slot.chunk = chunk
            slot.page = page
            slot.start = page.start
            slot.length = _page_size
            slot.locked = chunk.locked
            slot.canary = page.start + _page_size - (ring.per_page - k) * ring.stride
    for k in reversed(range(chunk.count)):
        chunk.slots[k].next_free = ring.free
        ring.free = &chunk.slots[k]
    return 0


cdef Slot *_ring_take(Ring *ring, size_t size, unsigned char **data) except NULL:
    """A READWRITE key slot of `size` bytes from `ring` (zero-filled)."""
    cdef Slot *slot
    cdef Chunk *fresh = NULL       # a run mapped by this very call
    if ring.closed:
        raise ValueError("this KeyRing was destroyed (or inherited through fork())")
    if size != ring.key_size:
        raise ValueError(f"this KeyRing holds {ring.key_size}-byte keys, not {size}")
    if ring.free == NULL:
        _require_backend()
        _ring_grow(ring)
        fresh = ring.free.chunk
    slot = ring.free
    try:
        _apply_lock_policy(slot.locked)
    except BaseException:
        if fresh != NULL:
            # A refusal leaves no mapping behind.  Every free slot of the
            # ring is in the run just mapped: the ring had none before.
            ring.free = NULL
            _unmap_chunk(fresh)
        raise
    slot.level = SK_READWRITE
    slot.page.counts[SK_READWRITE] += 1
    if _ring_page_set(slot.page, SK_READWRITE, False) != 0:
        slot.page.counts[SK_READWRITE] -= 1
        _raise_protect_error("mprotect of a KeyRing page", errno)
    ring.free = slot.next_free
    slot.next_free = NULL
    slot.wiped = False
    # Zero even though the last key here was wiped: a new key never starts
    # with bytes anyone wrote before (a stray write through a stale pointer).
    memset(slot.canary + _CANARY_SIZE, 0, size)
    memcpy(slot.canary, _canary, _CANARY_SIZE)
    data[0] = slot.canary + _CANARY_SIZE
    ring.keys += 1
    return slot


cdef void _ring_wipe(Slot *slot, unsigned char *data, size_t size) noexcept:
    cdef RingPage *page = slot.page
    if _ring_page_set(page, SK_READWRITE, True) == 0:
        if sodium.sodium_memcmp(slot.canary, _canary, _CANARY_SIZE) != 0:
            _fatal_c(b"the canary before a KeyRing key was overwritten "
                     b"(a write ran past the end of its neighbour)")
        sodium.sodium_memzero(slot.canary, _CANARY_SIZE + size)
    elif _zero_through_proc(slot.canary, _CANARY_SIZE + size) != 0:
        # At vm.max_map_count even with the spares: zeroed without a mapping
        # (the canary is not checked on this path).
        _fatal_c(b"cannot wipe a KeyRing key")
    page.counts[slot.level] -= 1
    slot.level = SK_NOACCESS
    slot.wiped = True
    slot.chunk.ring.keys -= 1
    # Lowering the page (when this key was the one keeping it readable) may
    # fail at vm.max_map_count once the spares are gone: the page then stays
    # as it is, holding this key's zeros, and is lowered at its next change.
    # Never fatal: the key is wiped either way.
    _ring_page_set(page, _ring_target(page), True)
    _take_spares()


cdef void _ring_give_back(Slot *slot) noexcept:
    cdef Ring *ring = slot.chunk.ring
    slot.next_free = ring.free
    ring.free = slot


cdef void _forget_rings() noexcept:
    # In a forked child: the parent's ring pages are sealed and forgotten.
    cdef Ring *ring = _rings
    while ring != NULL:
        ring.closed = True
        ring.free = NULL
        ring.keys = 0
        ring = ring.next
