# Included by _memory.pyx: wipes that cannot fail for want of a mapping.

# Spare mappings, held back so that a wipe or a lowering of protection never
# fails for want of one.  Changing the protection of the middle of a mapping
# splits it twice, and each split needs the count below vm.max_map_count,
# which mmap() lets reach one above it: three spares take a process at the
# limit back to where both splits succeed.  KeyRing pages share mappings with
# their neighbours, so the end of a borrow, which lowers one page, can need
# two splits each: two more spares are held for every KeyRing key raised
# above its own protection by a borrow, taken before it is raised (a borrow
# that cannot have them fails cleanly, with OSError, before anything is
# readable).  A
# protection change that hits the limit unmaps the spares and tries again;
# they are mapped again afterwards.  Each is a one-page MAP_SHARED anonymous
# mapping, which never merges with a neighbour, so unmapping one always
# frees exactly one mapping.
cdef extern from *:
    """
    #include <errno.h>
    static inline void sk_set_errno(int e) { errno = e; }
    """
    void _set_errno "sk_set_errno" (int e) noexcept nogil

cdef enum:
    _BASE_SPARES = 3
cdef void **_spares = NULL
cdef size_t _spare_count = 0          # mapped now
cdef size_t _spare_capacity = 0
cdef size_t _borrowed_ring_keys = 0   # KeyRing keys raised above their own protection


cdef inline size_t _spares_wanted() noexcept nogil:
    return _BASE_SPARES + 2 * _borrowed_ring_keys


cdef bint _take_spares() noexcept nogil:
    """Map spares up to what is wanted now; False when some could not be had."""
    global _spares, _spare_count, _spare_capacity
    cdef void *page
    cdef void **grown
    cdef size_t wanted = _spares_wanted()
    if wanted > _spare_capacity:
        grown = <void **>realloc(_spares, wanted * 2 * sizeof(void *))
        if grown == NULL:
            return False
        _spares = grown
        _spare_capacity = wanted * 2
    while _spare_count < wanted:
        page = mmap(NULL, _page_size, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if page == MAP_FAILED:
            return False
        _spares[_spare_count] = page
        _spare_count += 1
    return True


cdef bint _give_back_spares() noexcept nogil:
    global _spare_count
    cdef bint released = False
    while _spare_count > 0:
        _spare_count -= 1
        released = munmap(_spares[_spare_count], _page_size) == 0 or released
    return released


cdef int _protect_to_wipe(void *start, size_t length, int prot) noexcept nogil:
    """_mprotect() for a wipe: at the mapping limit, with the spares given back."""
    if _mprotect(start, length, prot) == 0:
        return 0
    if errno != ENOMEM or not _give_back_spares():
        return -1
    return _mprotect(start, length, prot)


cdef unsigned char _ZERO_PAGE[4096]       # C statics start zero, and this one stays so


cdef int _zero_through_proc(void *start, size_t length) noexcept nogil:
    # Zero memory whatever its protection, without changing it: a write
    # through /proc/self/mem (the kernel's FOLL_FORCE path, as a debugger
    # writes), which needs no mapping.  The wipe's last resort at
    # vm.max_map_count.  Opened each time: an fd kept open would reach the
    # parent's memory from a forked child.
    cdef int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC)
    cdef size_t done = 0
    cdef ssize_t wrote
    cdef size_t n
    if fd < 0:
        return -1
    while done < length:
        n = min(length - done, sizeof(_ZERO_PAGE))
        wrote = pwrite(fd, _ZERO_PAGE, n, <off_t><uintptr_t>(<unsigned char *>start + done))
        if wrote <= 0:
            if wrote < 0 and errno == EINTR:
                continue
            close(fd)
            return -1
        done += <size_t>wrote
    close(fd)
    return 0


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
