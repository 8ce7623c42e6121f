# Included by _memory.pyx: the layout of guarded memory, and the accounting.
#
# A chunk is one mapping of `count` slots, each slot a run of data pages with
# a guard page on each side; neighbours share guards:
#
#     [guard][slot 0 pages][guard][slot 1 pages][guard] ... [guard]
#
# The data of an allocation ends exactly at its slot's trailing guard page,
# with a 16-byte canary right before it (checked on destroy).  The whole chunk
# is madvise(MADV_DONTDUMP), MADV_WIPEONFORK (anonymous memory) or
# MADV_DONTFORK (secretmem), and mlock2(MLOCK_ONFAULT)ed; if that lock fails
# (RLIMIT_MEMLOCK), each slot is locked on its own when handed out, and its
# `locked` flag says whether that worked.  Every call's result is checked.
#
# Slots come back to a per-size pool only when their owner object is
# deallocated (no view can reach them), already wiped.  A slot that no view
# or borrow could reach when it was wiped stays READWRITE (small slots only):
# free memory holds no secret either way, and a key's life then costs two
# mprotect calls (READONLY when filled, READWRITE to wipe) instead of four.
# Every slot a view or borrow could still reach is PROT_NONE, so that a stale
# view dies on touch.  A raw C pointer kept past its release_*() (a contract
# violation) is invisible here: it may read zeros, and once the slot is handed
# to a new buffer, that buffer's bytes (the README says never to keep one).
# The pool is bounded: above the bound a chunk whose slots are all free is
# unmapped.
#
# Considered and rejected, so that nobody tries them again: a permanently
# writable alias mapping of the key pages (it saves the mprotect calls, but
# every NOACCESS key would be readable at a second address), and memory
# protection keys (pkeys: not on the CPUs we run on, and per-thread, while a
# key's protection must hold for the whole process).


cdef size_t _page_size = <size_t>sysconf(_SC_PAGESIZE)


cdef size_t _pmd_huge_page_size() noexcept nogil:
    # The transparent huge page is what one page-middle-directory entry maps:
    # 2 MiB on x86-64 and on aarch64 with 4 KiB pages, but 32 MiB with 16 KiB
    # pages and 512 MiB with 64 KiB ones.  The kernel says which; without THP
    # in the kernel (no such file), what a page of 8-byte entries maps.
    # Plain C: `open` here is posix.fcntl's.
    cdef char text[32]
    cdef ssize_t n = -1
    cdef ssize_t i
    cdef size_t size = 0
    cdef int fd = open(b"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", O_RDONLY | O_CLOEXEC)
    if fd >= 0:
        n = read(fd, text, sizeof(text))
        close(fd)
    for i in range(n if n > 0 else 0):
        if text[i] < c'0' or text[i] > c'9':
            break
        size = size * 10 + <size_t>(text[i] - c'0')
    return size if size != 0 else _page_size * (_page_size // 8)


cdef size_t _huge_page_size = _pmd_huge_page_size()
# Huge slots round a secret up to whole huge pages: worth it for 2 MiB (one
# page-table entry per mprotect instead of 512), never for 32 or 512 MiB of
# locked memory per secret.  Without them a large secret gets base pages.
cdef bint _huge_slots_on = (_huge_page_size <= _HUGE_SLOT_MAX_SIZE
                            and _huge_page_size > _page_size
                            and _huge_page_size % _page_size == 0)
cdef size_t _HUGE_PAGE_PAGES = _huge_page_size // _page_size if _huge_slots_on else 1
cdef size_t _huge_slots = 0        # huge-page slots mapped (for report())
cdef enum:
    _CANARY_SIZE = 16
    _MAX_POOLED_PAGES = 513        # slots up to 2 MiB are pooled
    _SLOTS_PER_SMALL_CHUNK = 64
    _SLOTS_PER_SECRET_CHUNK = 8
    _WRITABLE_FREE_MAX_PAGES = 16  # free slots up to 64 KiB may stay READWRITE (zeroed)
    _MEMCMP_STACK = 512            # stack bytes to zero after comparing two keys
    _HUGE_SLOT_MAX_SIZE = 2 * 1024 * 1024   # the largest huge page worth a slot of its own
    _HUGE_SLOT_MIN_PAGES = 256     # secrets of 1 MiB and more get huge-page slots
cdef unsigned char _canary[_CANARY_SIZE]

cdef struct Chunk:
    unsigned char *base
    size_t length
    size_t slot_pages
    size_t count
    size_t in_use
    int backend
    bint locked                    # the whole mapping is mlocked
    Slot *slots
    Ring *ring                     # KeyRing runs only
    RingPage *pages                # KeyRing runs only
    Chunk *prev
    Chunk *next

cdef struct Slot:
    Chunk *chunk
    unsigned char *start           # first data page
    size_t length                  # data pages, in bytes
    unsigned char *canary          # where the current allocation's canary is
    bint locked
    bint free
    Slot *prev_free
    Slot *next_free
    RingPage *page                 # KeyRing slots only: the shared page
    int level                      # the protection in force (KeyRing: the one this key wants)
    bint wiped                     # destroyed: wiped, its owner not yet gone

# A KeyRing packs many small keys into shared pages: a run of pages between
# two guard pages, each page holding as many [canary | key] slots as fit, the
# last key ending at the page's end.  A page's protection is the highest any
# of its live keys needs (the documented trade-off of density).
cdef enum:
    _RING_RUN_PAGES = 64           # pages in a KeyRing run, between two guard pages

cdef struct RingPage:
    unsigned char *start
    int counts[3]                  # live keys wanting NOACCESS, READONLY, READWRITE
    int level                      # protection in force

cdef struct Ring:
    size_t key_size
    size_t stride                  # canary + key
    size_t per_page
    size_t keys                    # keys taken and not yet wiped
    int backend
    bint closed                    # destroy()ed, or inherited through fork()
    Slot *free
    Ring *next

cdef Chunk *_chunks = NULL
cdef Slot *_pool[2][_MAX_POOLED_PAGES + 1]
cdef size_t _pool_bytes = 0
cdef size_t _pool_limit = 16 * 1024 * 1024
cdef size_t _locked_bytes = 0
cdef size_t _mapped_bytes = 0



cdef inline int _prot(int level) noexcept nogil:
    if level == SK_READWRITE:
        return PROT_READ | PROT_WRITE
    if level == SK_READONLY:
        return PROT_READ
    return PROT_NONE


cdef bint _lockable_error(int err) noexcept nogil:
    # What RLIMIT_MEMLOCK or a missing CAP_IPC_LOCK look like.
    return err == ENOMEM or err == EAGAIN or err == EPERM
