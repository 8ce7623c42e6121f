# Included by _memory.pyx: wipes that cannot fail for want of a mapping.

# Spare mappings, held back so that a wipe never fails for want of one.
# Changing the protection of the middle of a mapping splits it twice, and
# each split needs the count below vm.max_map_count, which mmap() lets reach
# one above it: three spares take a process at the limit back to where both
# splits succeed.  destroy() and the fatal path must succeed there all the
# same: a wipe that hits the limit unmaps the spares and tries again; they
# are mapped again after the wipe.  Each is a one-page MAP_SHARED anonymous
# mapping, which never merges with a neighbour, so unmapping one always frees
# exactly one mapping.
cdef enum:
    _SPARES = 3
cdef void *_spares[_SPARES]


cdef void _take_spares() noexcept nogil:
    cdef int i
    cdef void *page
    for i in range(_SPARES):
        if _spares[i] == NULL:
            page = mmap(NULL, _page_size, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
            if page != MAP_FAILED:
                _spares[i] = page


cdef bint _give_back_spares() noexcept nogil:
    cdef int i
    cdef bint released = False
    for i in range(_SPARES):
        if _spares[i] != NULL:
            released = munmap(_spares[i], _page_size) == 0 or released
            _spares[i] = NULL
    return released


cdef int _protect_to_wipe(void *start, size_t length, int prot) noexcept nogil:
    """_mprotect() for a wipe: at the mapping limit, with the spares given back."""
    if _mprotect(start, length, prot) == 0:
        return 0
    if errno != ENOMEM or not _give_back_spares():
        return -1
    return _mprotect(start, length, prot)


cdef void _wipe_all_chunks() noexcept nogil:
    # The fatal path's wipe, which cannot fail and needs neither the GIL nor
    # any Python object: every slot in use and every KeyRing page is zeroed
    # in place, wiped ones too (a user in flight may have written after a
    # wipe); a chunk that cannot be made writable even with the
    # spares is unmapped whole (unmapping a whole mapping never splits one),
    # which takes its secrets out of the process as surely.
    cdef Chunk *chunk = _chunks
    cdef RingPage *page
    cdef Slot *slot
    cdef size_t i
    while chunk != NULL:
        # Plain mprotect: this runs while the process is dying (_mprotect would wait).
        if (mprotect(chunk.base, chunk.length, PROT_READ | PROT_WRITE) != 0
                and not (errno == ENOMEM and _give_back_spares()
                         and mprotect(chunk.base, chunk.length, PROT_READ | PROT_WRITE) == 0)):
            munmap(chunk.base, chunk.length)
        else:
            if chunk.pages != NULL:
                for i in range(_RING_RUN_PAGES):
                    sodium.sodium_memzero(chunk.pages[i].start, _page_size)
            else:
                for i in range(chunk.count):
                    slot = &chunk.slots[i]
                    if not slot.free:
                        sodium.sodium_memzero(slot.start, slot.length)
            mprotect(chunk.base, chunk.length, PROT_NONE)
        chunk = chunk.next
