# cython: language_level=3, embedsignature=True, auto_pickle=False
"""Guarded memory for secrets: the only module that allocates secret memory.

Layers, bottom up:
  * the fatal path (`_fatal`): one line on stderr, wipe every live buffer, abort;
  * the registry of live buffers (an intrusive list; the fatal path, wipe_all()
    and the fork hook walk it);
  * the slot allocator: guarded slots carved from chunks of pages, kept in a
    bounded pool for reuse, on one of two backends (anonymous memory or
    memfd_secret); KeyRing packs many small keys into shared pages;
  * `SecureBuffer` / `SecureKey`: protection as state, borrows, buffer protocol.
"""

import enum
import os
import warnings

from cpython.buffer cimport PyBuffer_FillInfo, PyBUF_WRITABLE
from cpython.exc cimport PyErr_CheckSignals
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.object cimport PyObject_AsFileDescriptor
from libc.errno cimport errno, EINTR, EAGAIN, ENOMEM, EPERM, ENOSYS
from libc.stdint cimport uintptr_t
from libc.stdlib cimport abort, calloc, free
from libc.string cimport strlen, memcpy, strerror
from posix.mman cimport (
    mmap, munmap, mprotect, mlock2, madvise, MAP_FAILED, MAP_PRIVATE, MAP_SHARED,
    MAP_ANONYMOUS, PROT_NONE, PROT_READ, PROT_WRITE, MLOCK_ONFAULT,
    MADV_DONTDUMP, MADV_WIPEONFORK, MADV_DONTFORK,
)
from posix.unistd cimport read, write, close, ftruncate, sysconf, _SC_PAGESIZE

from securekeys.includes cimport sodium, system
from securekeys.errors import LockError, SecurityWarning

# ---------------------------------------------------------------------------
# The fatal path.  Misuse of a key ends the process: this is the one place
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


# ---------------------------------------------------------------------------
# Registry of live buffers: an intrusive doubly linked list of borrowed
# references, linked in __cinit__ and unlinked in __dealloc__ (both under the
# GIL).  Cheap (no weakrefs), and lets the fatal path find every secret.

cdef void *_registry_head = NULL
cdef Py_ssize_t _registry_count = 0


cdef inline void _register(SecureBuffer buf) noexcept:
    global _registry_head, _registry_count
    buf._c_prev = NULL
    buf._c_next = _registry_head
    if _registry_head != NULL:
        (<SecureBuffer>_registry_head)._c_prev = <void *>buf
    _registry_head = <void *>buf
    _registry_count += 1


cdef inline void _unregister(SecureBuffer buf) noexcept:
    global _registry_head, _registry_count
    if buf._c_prev != NULL:
        (<SecureBuffer>buf._c_prev)._c_next = buf._c_next
    elif _registry_head == <void *>buf:
        _registry_head = buf._c_next
    else:
        return  # never linked
    if buf._c_next != NULL:
        (<SecureBuffer>buf._c_next)._c_prev = buf._c_prev
    buf._c_prev = buf._c_next = NULL
    _registry_count -= 1


cdef void _wipe_registry() noexcept:
    # Best effort by design: this runs on the way to abort().
    cdef void *node = _registry_head
    cdef SecureBuffer buf
    while node != NULL:
        buf = <SecureBuffer>node
        if buf._state != SK_DESTROYED and buf._c_slot != NULL:
            if _slot_protect(<Slot *>buf._c_slot, SK_READWRITE) == 0:
                sodium.sodium_memzero(buf._c_data, buf._size)
                _slot_protect(<Slot *>buf._c_slot, SK_NOACCESS)
        node = buf._c_next


def live_buffers():
    """Number of secure buffers currently allocated in this process."""
    return _registry_count


def wipe_all():
    """Destroy every live secure buffer in the process; return how many.

    Every memoryview of them dies on its next touch (memguard's Purge).
    """
    cdef void *node = _registry_head
    cdef SecureBuffer buf
    cdef Py_ssize_t count = 0
    while node != NULL:
        buf = <SecureBuffer>node
        node = buf._c_next
        if buf._state != SK_DESTROYED:
            buf.destroy()
            count += 1
    return count


# ---------------------------------------------------------------------------
# One helper turns a failed C call into an exception.

cdef int _raise_errno(str what, int err) except -1:
    message = f"{what}: {strerror(err).decode('utf-8', 'replace')}"
    if err == ENOMEM:
        raise MemoryError(message)
    raise OSError(err, message)


# ---------------------------------------------------------------------------
# The slot allocator.
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
# deallocated (no view can reach them), already wiped and PROT_NONE.  The pool
# is bounded: above the bound a chunk whose slots are all free is unmapped.

cdef size_t _page_size = <size_t>sysconf(_SC_PAGESIZE)
cdef enum:
    _CANARY_SIZE = 16
    _MAX_POOLED_PAGES = 513        # slots up to 2 MiB are pooled
    _SLOTS_PER_SMALL_CHUNK = 64
    _SLOTS_PER_SECRET_CHUNK = 8
    BACKEND_SODIUM = 0             # anonymous private memory
    BACKEND_SECRETMEM = 1          # memfd_secret(2): out of the kernel's direct map
    POLICY_BEST_EFFORT = 0
    POLICY_WARN = 1
    POLICY_REQUIRE = 2
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
    int level                      # KeyRing slots only: the protection this key wants

# A KeyRing packs many small keys into shared pages: a run of pages between
# two guard pages, each page holding as many [canary | key] slots as fit, the
# last key ending at the page's end.  A page's protection is the highest any
# of its live keys needs (the documented trade-off of density).
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
cdef int _backend = BACKEND_SODIUM
cdef int _lock_policy = POLICY_BEST_EFFORT
cdef bint _warned_unlocked = False

cdef tuple _BACKENDS = ("sodium", "secretmem")
cdef tuple _POLICIES = ("best-effort", "warn", "require")


cdef inline int _prot(int level) noexcept nogil:
    if level == SK_READWRITE:
        return PROT_READ | PROT_WRITE
    if level == SK_READONLY:
        return PROT_READ
    return PROT_NONE


cdef bint _lockable_error(int err) noexcept nogil:
    # What RLIMIT_MEMLOCK or a missing CAP_IPC_LOCK look like.
    return err == ENOMEM or err == EAGAIN or err == EPERM


cdef unsigned char *_map_guarded(size_t length, int backend, bint *locked) except NULL:
    """Map `length` bytes PROT_NONE, never dumped, wiped or unmapped on fork,
    and mlock2(MLOCK_ONFAULT)ed when RLIMIT_MEMLOCK allows (`locked`)."""
    cdef void *base
    cdef int fd = -1, err = 0
    if backend == BACKEND_SECRETMEM:
        fd = system.memfd_secret()
        if fd < 0:
            _raise_errno("memfd_secret", errno)
        if ftruncate(fd, length) != 0:
            err = errno
            close(fd)
            _raise_errno("ftruncate of secret memory", err)
        base = mmap(NULL, length, PROT_NONE, MAP_SHARED, fd, 0)
        err = errno
        close(fd)
    else:
        base = mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        err = errno
    if base == MAP_FAILED:
        if backend == BACKEND_SECRETMEM and err == EAGAIN:
            # secretmem is always locked: past RLIMIT_MEMLOCK there is no
            # unlocked fallback, whatever the lock policy.
            raise LockError(f"cannot map {length} bytes of secret memory: RLIMIT_MEMLOCK "
                            f"is exhausted (secretmem is always locked)")
        _raise_errno(f"cannot map {length} bytes of guarded memory", err)
    try:
        if madvise(base, length, MADV_DONTDUMP) != 0:
            _raise_errno("madvise(MADV_DONTDUMP)", errno)
        # Keys must not survive fork(): anonymous pages read as zero in the
        # child; secretmem cannot be wiped that way, so it is not inherited.
        if madvise(base, length, MADV_WIPEONFORK if backend == BACKEND_SODIUM else MADV_DONTFORK) != 0:
            _raise_errno("madvise(MADV_WIPEONFORK/MADV_DONTFORK)", errno)
        if backend == BACKEND_SECRETMEM:
            # The kernel locks secretmem itself (VM_LOCKED, charged to
            # RLIMIT_MEMLOCK by the mmap above, which fails past the limit).
            locked[0] = True
        else:
            locked[0] = mlock2(base, length, MLOCK_ONFAULT) == 0
            if not locked[0] and not _lockable_error(errno):
                _raise_errno("mlock2", errno)
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
    cdef Chunk *chunk = _new_chunk((count * (slot_pages + 1) + 1) * _page_size, count, backend)
    cdef size_t i
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


cdef Slot *_slot_take(size_t size, unsigned char **data) except NULL:
    """A zero-filled READWRITE slot whose last `size` bytes are the data."""
    global _locked_bytes
    cdef size_t pages = (size + _CANARY_SIZE + _page_size - 1) // _page_size
    cdef Slot *slot = NULL
    cdef Chunk *chunk
    cdef size_t i
    if pages <= _MAX_POOLED_PAGES:
        slot = _pool[_backend][pages]
        if slot == NULL:
            # secretmem is charged to RLIMIT_MEMLOCK whole at mmap: smaller chunks
            chunk = _map_chunk(pages, max(1, (_SLOTS_PER_SMALL_CHUNK if _backend == BACKEND_SODIUM
                                              else _SLOTS_PER_SECRET_CHUNK) // pages), _backend)
            for i in reversed(range(chunk.count)):
                _pool_push(&chunk.slots[i])
            slot = _pool[_backend][pages]
        _pool_remove(slot)
    else:
        slot = &_map_chunk(pages, 1, _backend).slots[0]
    slot.chunk.in_use += 1
    try:
        if not slot.locked:
            # The chunk could not be locked whole: lock this slot alone.
            if mlock2(slot.start, slot.length, MLOCK_ONFAULT) == 0:
                slot.locked = True
                _locked_bytes += slot.length
            elif not _lockable_error(errno):
                _raise_errno("mlock2", errno)
        _apply_lock_policy(slot.locked)
        if mprotect(slot.start, slot.length, PROT_READ | PROT_WRITE) != 0:
            _raise_errno("mprotect", errno)
    except BaseException:
        _slot_give_back(slot)
        raise
    data[0] = slot.start + slot.length - size
    slot.canary = data[0] - _CANARY_SIZE
    memcpy(slot.canary, _canary, _CANARY_SIZE)
    return slot


cdef inline int _slot_protect(Slot *slot, int level) noexcept nogil:
    if slot.page != NULL:
        return _ring_page_change(slot, level)
    return mprotect(slot.start, slot.length, _prot(level))


cdef void _slot_wipe(Slot *slot, unsigned char *data, size_t size, int current) noexcept:
    """Check the canary, zero canary and data, leave the slot PROT_NONE.
    `current` is the protection in force (one mprotect saved when READWRITE)."""
    if slot.page != NULL:
        _ring_wipe(slot, data, size)
        return
    if current != SK_READWRITE and mprotect(slot.start, slot.length, PROT_READ | PROT_WRITE) != 0:
        _fatal_c(b"cannot make a secure buffer writable to wipe it")
    if sodium.sodium_memcmp(slot.canary, _canary, _CANARY_SIZE) != 0:
        _fatal_c(b"the canary before a secure buffer was overwritten "
                 b"(a write ran past the start of the buffer)")
    sodium.sodium_memzero(slot.canary, _CANARY_SIZE + size)
    if mprotect(slot.start, slot.length, PROT_NONE) != 0:
        _fatal_c(b"cannot make a wiped secure buffer inaccessible")


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


def _sodium_malloc_cycle(size_t size):
    """sodium_malloc + sodium_free of `size` bytes: the benchmark's baseline."""
    cdef void *p = sodium.sodium_malloc(size)
    if p == NULL:
        raise MemoryError("sodium_malloc failed")
    sodium.sodium_free(p)


cdef void _pool_trim() noexcept:
    # Unmap wholly free chunks until the pool is within its bound.
    cdef Chunk *chunk = _chunks
    cdef Chunk *next_chunk
    while chunk != NULL and _pool_bytes > _pool_limit:
        next_chunk = chunk.next
        if chunk.ring == NULL and chunk.in_use == 0:
            _unmap_chunk(chunk)
        chunk = next_chunk


def _set_pool_limit(size_t limit):
    """Set the pool's bound in bytes (for tests and tuning); return the old one."""
    global _pool_limit
    old = _pool_limit
    _pool_limit = limit
    _pool_trim()
    return old


def _allocator_stats():
    """Numbers for report(): backend, policy, pool and lock accounting."""
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
    }


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
    global _backend
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


def get_backend():
    """The backend new secure buffers are allocated on."""
    return _BACKENDS[_backend]


# ---------------------------------------------------------------------------
# KeyRing pages.

cdef enum:
    _RING_RUN_PAGES = 64

cdef Ring *_rings = NULL


cdef inline int _ring_target(RingPage *page) noexcept nogil:
    if page.counts[SK_READWRITE] > 0:
        return SK_READWRITE
    if page.counts[SK_READONLY] > 0:
        return SK_READONLY
    return SK_NOACCESS


cdef int _ring_page_set(RingPage *page, int level) noexcept nogil:
    if level != page.level:
        if mprotect(page.start, _page_size, _prot(level)) != 0:
            return -1
        page.level = level
    return 0


cdef int _ring_page_change(Slot *slot, int level) noexcept nogil:
    cdef RingPage *page = slot.page
    cdef int old = slot.level
    page.counts[old] -= 1
    page.counts[level] += 1
    if _ring_page_set(page, _ring_target(page)) != 0:
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


cdef Slot *_ring_take(Ring *ring, unsigned char **data) except NULL:
    cdef Slot *slot
    if ring.free == NULL:
        _ring_grow(ring)
    slot = ring.free
    _apply_lock_policy(slot.locked)
    slot.level = SK_READWRITE
    slot.page.counts[SK_READWRITE] += 1
    if _ring_page_set(slot.page, SK_READWRITE) != 0:
        slot.page.counts[SK_READWRITE] -= 1
        _raise_errno("mprotect", errno)
    ring.free = slot.next_free
    slot.next_free = NULL
    memcpy(slot.canary, _canary, _CANARY_SIZE)
    data[0] = slot.canary + _CANARY_SIZE
    ring.keys += 1
    return slot


cdef void _ring_wipe(Slot *slot, unsigned char *data, size_t size) noexcept:
    cdef RingPage *page = slot.page
    if _ring_page_set(page, SK_READWRITE) != 0:
        _fatal_c(b"cannot make a KeyRing page writable to wipe a key")
    if sodium.sodium_memcmp(slot.canary, _canary, _CANARY_SIZE) != 0:
        _fatal_c(b"the canary before a KeyRing key was overwritten "
                 b"(a write ran past the end of its neighbour)")
    sodium.sodium_memzero(slot.canary, _CANARY_SIZE + size)
    page.counts[slot.level] -= 1
    slot.level = SK_NOACCESS
    slot.chunk.ring.keys -= 1
    if _ring_page_set(page, _ring_target(page)) != 0:
        _fatal_c(b"cannot restore the protection of a KeyRing page")


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


# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# Start-up: libsodium, our canary, the backend from the environment.

if sodium.sodium_init() < 0:
    raise ImportError("securekeys: sodium_init() failed; libsodium is unusable")
if sodium.sodium_set_misuse_handler(_on_sodium_misuse) != 0:
    raise ImportError("securekeys: cannot install libsodium's misuse handler")
sodium.randombytes_buf(_canary, _CANARY_SIZE)
if os.environ.get("SECUREKEYS_BACKEND"):
    set_backend(os.environ["SECUREKEYS_BACKEND"])


def _get_dumpable():
    """Whether this process may dump core or be ptraced (prctl PR_GET_DUMPABLE)."""
    cdef int rc = system.prctl(system.PR_GET_DUMPABLE, 0, 0, 0, 0)
    if rc < 0:
        _raise_errno("prctl(PR_GET_DUMPABLE)", errno)
    return rc != 0


def _set_dumpable(bint dumpable):
    """prctl(PR_SET_DUMPABLE): 0 keeps core dumps and ptrace by other users out."""
    if system.prctl(system.PR_SET_DUMPABLE, 1 if dumpable else 0, 0, 0, 0) != 0:
        _raise_errno("prctl(PR_SET_DUMPABLE)", errno)


def libsodium_version():
    """The version string of the libsodium this module runs on."""
    return sodium.sodium_version_string().decode("ascii")


# ---------------------------------------------------------------------------
# Protection as state.

class Protection(enum.Enum):
    """The page protection of a secure buffer, as the MMU enforces it."""
    NOACCESS = "noaccess"
    READONLY = "readonly"
    READWRITE = "readwrite"
    DESTROYED = "destroyed"


cdef tuple _PROTECTIONS = (Protection.NOACCESS, Protection.READONLY,
                           Protection.READWRITE, Protection.DESTROYED)


cdef size_t _checked_size(object size) except 0:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    if size > <Py_ssize_t>(PY_SSIZE_T_MAX // 2):
        raise ValueError(f"size {size} is too large")
    return <size_t>size


cdef class SecureBuffer:
    """A fixed-size buffer in guarded, locked, never-dumped memory.

    Guard pages on both sides (the data ends exactly at the trailing one), a
    canary before the data, ``mlock`` and ``MADV_DONTDUMP``.  Starts zero-filled
    and READWRITE.  Misuse (touching it while NOACCESS or after destroy())
    ends the process.
    """

    def __cinit__(self, size, KeyRing _ring=None):
        cdef size_t n = _checked_size(size)
        cdef unsigned char *data = NULL
        if _ring is None:
            self._c_slot = _slot_take(n, &data)
        else:
            self._c_slot = _ring.take(n, &data)
            self._owner = _ring      # the ring's pages live as long as its keys
        self._c_data = data
        self._size = n
        self._base = SK_READWRITE
        self._state = SK_READWRITE
        self._is_key = isinstance(self, SecureKey)
        _register(self)

    def __dealloc__(self):
        cdef Slot *slot = <Slot *>self._c_slot
        _unregister(self)
        if slot != NULL:
            if self._state != SK_DESTROYED:
                _slot_wipe(slot, self._c_data, self._size, self._state)
            _slot_give_back(slot)
            self._c_slot = NULL
        self._c_data = NULL

    # -- the cimport API ----------------------------------------------------

    cdef const unsigned char *borrow_read(self) except NULL:
        self._require_live("a read borrow")
        self._readers += 1
        try:
            self._apply()
        except BaseException:
            self._readers -= 1
            raise
        return self._c_data

    cdef unsigned char *borrow_write(self) except NULL:
        self._require_live("a write borrow")
        if self._is_key:
            _fatal_c(b"a write borrow of a SecureKey (keys never change once filled)")
        self._writers += 1
        try:
            self._apply()
        except BaseException:
            self._writers -= 1
            raise
        return self._c_data

    cdef int release_read(self) except -1:
        if self._readers <= 0:
            _fatal_c(b"release_read() without a read borrow")
        self._readers -= 1
        return self._apply()

    cdef int release_write(self) except -1:
        if self._writers <= 0:
            _fatal_c(b"release_write() without a write borrow")
        self._writers -= 1
        return self._apply()

    cdef unsigned char *fill_ptr(self) except NULL:
        self._require_live("fill_ptr()")
        if self._state != SK_READWRITE or self._readers or self._writers:
            _fatal(f"fill_ptr() on a {_PROTECTIONS[self._state].name} or borrowed "
                   f"{type(self).__name__} (only a new one can be filled)")
        return self._c_data

    cdef int seal(self) except -1:
        self._require_live("seal()")
        return self._set_base(SK_READONLY)

    cdef size_t nbytes(self) noexcept nogil:
        return self._size

    cdef int protection(self) noexcept nogil:
        return self._state

    # -- state machinery ----------------------------------------------------

    cdef int _require_live(self, const char *what) except -1:
        if self._state == SK_DESTROYED:
            if self._c_slot == NULL:
                _fatal(f"{what.decode()} on a {type(self).__name__} destroyed by fork(): "
                       f"keys do not survive into a child process")
            _fatal(f"{what.decode()} on a destroyed {type(self).__name__}")
        return 0

    cdef int _apply(self) except -1:
        # The protection in force is the owner's choice, raised for as long
        # as borrows need more.  A change is an mprotect() that succeeded.
        cdef int target = self._base
        if self._state == SK_DESTROYED:
            return 0
        if self._writers > 0:
            target = SK_READWRITE
        elif self._readers > 0 and target < SK_READONLY:
            target = SK_READONLY
        if target != self._state:
            if _slot_protect(<Slot *>self._c_slot, target) != 0:
                _raise_errno("mprotect on guarded memory", errno)
            self._state = target
        return 0

    cdef int _set_base(self, int level) except -1:
        cdef int previous = self._base
        self._base = level
        try:
            self._apply()
        except BaseException:
            self._base = previous
            raise
        return 0

    # -- Python API ---------------------------------------------------------

    @property
    def size(self):
        """Size in bytes."""
        return self._size

    def __len__(self):
        return self._size

    def _data_address(self):
        """Address of the first data byte (for diagnostics; not a secret)."""
        return <uintptr_t>self._c_data

    @property
    def state(self):
        """The protection in force now (a `Protection`)."""
        return _PROTECTIONS[self._state]

    @property
    def destroyed(self):
        """True once destroy() has wiped the buffer."""
        return self._state == SK_DESTROYED

    @property
    def locked(self):
        """True when the pages really are mlocked (never swapped)."""
        return self._c_slot != NULL and (<Slot *>self._c_slot).locked

    def noaccess(self):
        """Make the memory inaccessible: any touch ends the process."""
        self._require_live("noaccess()")
        self._set_base(SK_NOACCESS)

    def readonly(self):
        """Make the memory read-only at the MMU."""
        self._require_live("readonly()")
        self._set_base(SK_READONLY)

    def readwrite(self):
        """Make the memory readable and writable (never for a SecureKey)."""
        self._require_live("readwrite()")
        if self._is_key:
            _fatal_c(b"readwrite() on a SecureKey (keys never change once filled)")
        self._set_base(SK_READWRITE)

    def destroy(self):
        """Wipe the bytes and make the memory inaccessible; idempotent.

        Always succeeds, even while memoryviews exist: touching one afterwards
        ends the process.  The memory is freed when the object is deallocated.
        """
        if self._state == SK_DESTROYED:
            return
        _slot_wipe(<Slot *>self._c_slot, self._c_data, self._size, self._state)
        self._state = self._base = SK_DESTROYED

    def readinto(self, fd):
        """Fill the buffer with read(2) straight from `fd` until full or EOF.

        `fd` is an int or an object with fileno().  The GIL is released while
        reading; EINTR and short reads are retried.  Returns the byte count.
        Needs READWRITE: writing into protected memory is fatal.
        """
        if isinstance(fd, bool):
            raise TypeError("fd must be an int or have fileno(), not bool")
        cdef int c_fd = PyObject_AsFileDescriptor(fd)
        self._require_live("readinto()")
        if self._state != SK_READWRITE:
            _fatal(f"readinto() on a {_PROTECTIONS[self._state].name} "
                   f"{type(self).__name__} (writing to protected memory)")
        cdef size_t done = 0
        cdef ssize_t got
        cdef int err = 0
        while done < self._size:
            with nogil:
                got = read(c_fd, self._c_data + done, self._size - done)
                if got < 0:
                    err = errno
            if got > 0:
                done += <size_t>got
            elif got == 0:
                break
            elif err == EINTR:
                PyErr_CheckSignals()   # a signal handler may raise
            else:
                _raise_errno("read into a secure buffer", err)
        return done

    def reading(self):
        """Borrow for reading: ``with buf.reading() as view: ...``.

        Raises the protection to at least READONLY for the block, yields a
        read-only memoryview and restores the protection when the last borrow
        ends.  Borrows nest and may overlap across threads.
        """
        self._require_live("reading()")
        return _Borrow(self, False)

    def writing(self):
        """Borrow for writing: like reading(), with a writable memoryview."""
        self._require_live("writing()")
        if self._is_key:
            _fatal_c(b"writing() on a SecureKey (keys never change once filled)")
        return _Borrow(self, True)

    def __getbuffer__(self, Py_buffer *view, int flags):
        cdef bint writable
        if self._state == SK_DESTROYED:
            _fatal(f"a memoryview of a destroyed {type(self).__name__}")
        if self._state == SK_NOACCESS:
            _fatal(f"a memoryview of a NOACCESS {type(self).__name__}")
        writable = self._state == SK_READWRITE and not self._is_key
        if flags & PyBUF_WRITABLE and not writable:
            raise BufferError(f"a {type(self).__name__} in state "
                              f"{_PROTECTIONS[self._state].name} is not writable")
        PyBuffer_FillInfo(view, self, self._c_data, self._size, not writable, flags)

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __eq__(self, other):
        """Constant-time comparison of two secure buffers of equal length."""
        if not isinstance(other, SecureBuffer):
            return NotImplemented
        cdef SecureBuffer that = <SecureBuffer>other
        if self._size != that._size:
            return False
        cdef const unsigned char *mine = self.borrow_read()
        cdef const unsigned char *theirs
        cdef int rc
        try:
            theirs = that.borrow_read()
            try:
                rc = sodium.sodium_memcmp(mine, theirs, self._size)
            finally:
                that.release_read()
        finally:
            self.release_read()
        return rc == 0

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self):
        raise TypeError(f"{type(self).__name__} is not hashable")

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} cannot be pickled")

    def __reduce_ex__(self, protocol):
        raise TypeError(f"{type(self).__name__} cannot be pickled")

    def __copy__(self):
        raise TypeError(f"{type(self).__name__} cannot be copied")

    def __deepcopy__(self, memo):
        raise TypeError(f"{type(self).__name__} cannot be copied")

    def __repr__(self):
        return (f"<{type(self).__name__} size={self._size} "
                f"state={_PROTECTIONS[self._state].name} locked={self.locked}>")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.destroy()


cdef class SecureKey(SecureBuffer):
    """A SecureBuffer whose bytes never change once filled.

    A new SecureKey is READWRITE only so that it can be filled (readinto);
    it never exports a writable view, and once it leaves READWRITE it never
    returns.  Keys normally come from create_key() or read_key().
    """


cdef class _Borrow:
    """The context manager behind reading() and writing()."""
    cdef SecureBuffer _buf
    cdef bint _write
    cdef object _view

    def __cinit__(self, SecureBuffer buf, bint write):
        self._buf = buf
        self._write = write

    def __enter__(self):
        if self._view is not None:
            raise RuntimeError("this borrow is already active")
        if self._write:
            self._buf.borrow_write()
        else:
            self._buf.borrow_read()
        try:
            view = memoryview(self._buf)
            self._view = view if self._write else view.toreadonly()
        except BaseException:
            self._release()
            raise
        return self._view

    def __exit__(self, exc_type, exc, tb):
        view = self._view
        if view is None:
            raise RuntimeError("this borrow is not active")
        self._view = None
        try:
            view.release()
        except BufferError:
            pass   # a slice of the view is still exported; it dies on touch later
        self._release()

    cdef _release(self):
        if self._write:
            self._buf.release_write()
        else:
            self._buf.release_read()


cdef class KeyRing:
    """A dense store for many small keys of one size.

    Keys are packed into shared guarded, locked pages (a canary before each
    key, guard pages around each run of 64 pages), so that 100,000 32-byte
    keys fit in a few MiB of locked memory and a handful of mappings.  Its
    keys are ordinary SecureKeys; the trade-off is that protection is per
    page: while one key is borrowed, its page-mates are readable too, and a
    page is as accessible as its most accessible key.
    """

    def __cinit__(self, key_size):
        global _rings
        cdef size_t n = _checked_size(key_size)
        if n > _page_size - _CANARY_SIZE:
            raise ValueError(f"KeyRing keys must be at most {_page_size - _CANARY_SIZE} bytes, not {n}")
        cdef Ring *ring = <Ring *>calloc(1, sizeof(Ring))
        if ring == NULL:
            raise MemoryError("cannot allocate a KeyRing")
        ring.key_size = n
        ring.stride = _CANARY_SIZE + n
        ring.per_page = _page_size // ring.stride
        ring.backend = _backend
        ring.next = _rings
        _rings = ring
        self._c_ring = ring

    def __dealloc__(self):
        # Runs only once every key is gone: keys keep their ring alive.
        global _rings
        cdef Ring *ring = <Ring *>self._c_ring
        cdef Chunk *chunk = _chunks
        cdef Chunk *next_chunk
        cdef Ring **link = &_rings
        if ring == NULL:
            return
        while chunk != NULL:
            next_chunk = chunk.next
            if chunk.ring == ring:
                _unmap_chunk(chunk)
            chunk = next_chunk
        while link[0] != NULL and link[0] != ring:
            link = &link[0].next
        if link[0] == ring:
            link[0] = ring.next
        free(ring)

    cdef void *take(self, size_t size, unsigned char **data) except NULL:
        cdef Ring *ring = <Ring *>self._c_ring
        if ring.closed:
            raise ValueError("this KeyRing was destroyed (or inherited through fork())")
        if size != ring.key_size:
            raise ValueError(f"this KeyRing holds {ring.key_size}-byte keys, not {size}")
        return _ring_take(ring, data)

    @property
    def key_size(self):
        """The size of every key in this ring."""
        return (<Ring *>self._c_ring).key_size

    def __len__(self):
        """Keys in the ring that are not destroyed."""
        return (<Ring *>self._c_ring).keys

    def __repr__(self):
        return f"<KeyRing key_size={self.key_size} keys={len(self)}>"

    def _new_key(self):
        """An empty READWRITE SecureKey from this ring, to be filled."""
        return SecureKey((<Ring *>self._c_ring).key_size, self)

    def create_key(self):
        """A new random key in this ring, READONLY."""
        cdef SecureKey key = SecureKey((<Ring *>self._c_ring).key_size, self)
        sodium.randombytes_buf(key.fill_ptr(), key._size)
        key.seal()
        return key

    def read_key(self, path):
        """Read a key file into this ring, with every check of read_key()."""
        from securekeys.files import fill_key_from_file
        key = self._new_key()
        fill_key_from_file(key, path)
        return key

    def destroy(self):
        """Destroy every key in the ring; it then takes no new keys."""
        cdef void *node = _registry_head
        cdef SecureBuffer buf
        while node != NULL:
            buf = <SecureBuffer>node
            node = buf._c_next
            if buf._owner is self:
                buf.destroy()
        (<Ring *>self._c_ring).closed = True


def create_key(size):
    """A new key of `size` random bytes, made inside guarded memory, READONLY."""
    cdef SecureKey key = SecureKey(size)
    cdef unsigned char *data = key.fill_ptr()
    with nogil:
        sodium.randombytes_buf(data, key._size)
    key.seal()
    return key


_KEY_PAIR_FIELDS = ("private", "secret", "private_key", "secret_key",
                    "public", "public_key", "identity", "identity_key")


def destroy_key(obj):
    """Destroy a secure buffer, or every secure buffer of a key pair.

    A key pair is a mapping or an object whose keys/attributes named private,
    secret, private_key, secret_key, public, public_key, identity or
    identity_key hold secure buffers.  Anything else raises TypeError.
    """
    if isinstance(obj, SecureBuffer):
        obj.destroy()
        return
    if isinstance(obj, (bytes, bytearray, memoryview, str)) or obj is None:
        raise TypeError(f"destroy_key() takes a secure buffer or a key pair, "
                        f"not {type(obj).__name__}")
    found = []
    for name in _KEY_PAIR_FIELDS:
        try:
            value = obj[name] if hasattr(obj, "keys") else getattr(obj, name)
        except (KeyError, AttributeError, TypeError, IndexError):
            continue
        if isinstance(value, SecureBuffer):
            found.append(value)
    if not found:
        raise TypeError(f"destroy_key() found no secure buffer in "
                        f"{type(obj).__name__} (looked for {', '.join(_KEY_PAIR_FIELDS)})")
    for value in found:
        value.destroy()


def _at_eof(int fd):
    """True when `fd` is at end of file, proven by one more read(2).

    The probe byte lands in C stack memory and is wiped, never in a Python
    object: if the file was longer than expected, that byte is key material.
    """
    cdef unsigned char probe = 0
    cdef ssize_t got
    cdef int err = 0
    while True:
        with nogil:
            got = read(fd, &probe, 1)
            if got < 0:
                err = errno
            sodium.sodium_memzero(&probe, 1)
        if got >= 0:
            return got == 0
        if err == EINTR:
            PyErr_CheckSignals()
        else:
            _raise_errno("read", err)
