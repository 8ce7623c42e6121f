# Included by _memory.pyx: the lifetime of a buffer's bytes while other
# threads use them.  docs/lifetime.md draws the state machine.
#
# A user is anything that touches the bytes for the length of a call,
# possibly without the GIL: a C borrow (borrow_read/borrow_write, which the
# crypto runner, the input snapshots and == take), and the library's own
# fills (readinto, read_key, create_key).  Each is counted in `_users`, with
# atomic operations so that the count holds without the GIL.  Python views
# (memoryview, reading(), writing()) are counted for protection only
# (`_readers`, `_writers`, `_exports`): destroy() revokes them at once, as
# it always has, and a stale view dies on its next touch.
#
# `_users` holds the count of users in its low bits, the count of those that
# write (C write borrows, fills) above it, and these flags:
#   _DOOMED       destroy() or wipe_all() asked: no new user may start.
#   _WIPED        the one wipe is claimed: exactly one thread performs it.
#   _WIPED_UNDER  the wipe ran while something could still reach the bytes
#                 (a user in flight, a view): every user that ends from then
#                 on zeroes the bytes again (what it wrote after the wipe)
#                 and fails, and dealloc zeroes them again before the slot
#                 goes back to the pool.
#
# Who wipes:
#   destroy() of a sealed buffer (base READONLY or NOACCESS) whose users in
#     flight only read it: nobody at once; the last user to end wipes, so
#     every call already running completes with the whole key.
#     destroy() does not wait, because a user may take seconds (Argon2) and
#     the caller may hold what that user needs.
#   destroy() of a READWRITE buffer or of one with a writing user in flight
#     (a readinto() blocked on a pipe may never end), wipe_all()
#     and KeyRing.destroy(): now, whatever is in flight.  The order is zero,
#     then revoke (PROT_NONE): a write that lands after the zeroing is
#     zeroed again by its writer when it ends; one that comes after the
#     revocation cannot land (the kernel says EFAULT; the CPU faults, which
#     is the fatal path).  A call that was using the buffer fails on return.

cdef extern from *:
    """
    static inline int sk_fetch_add(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
    static inline int sk_fetch_sub(int *p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_ACQ_REL); }
    static inline int sk_fetch_or(int *p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_ACQ_REL); }
    static inline int sk_fetch_and(int *p, int v) { return __atomic_fetch_and(p, v, __ATOMIC_ACQ_REL); }
    static inline int sk_load(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    """
    int sk_fetch_add(int *p, int v) noexcept nogil
    int sk_fetch_sub(int *p, int v) noexcept nogil
    int sk_fetch_or(int *p, int v) noexcept nogil
    int sk_fetch_and(int *p, int v) noexcept nogil
    int sk_load(int *p) noexcept nogil

cdef enum:
    _USERS = (1 << 20) - 1
    _WRITER = 1 << 20          # one writing user (they are counted in _USERS too)
    _WRITERS = 0xF << 20
    _DOOMED = 1 << 24
    _WIPED = 1 << 25
    _WIPED_UNDER = 1 << 26
    _RING_RAISED = 1 << 27     # a KeyRing key raised by a borrow holds two spares (memory_wipe.pxi)


cdef inline bint _is_doomed(SecureBuffer buf) noexcept nogil:
    return buf._base == SK_DESTROYED


cdef inline int _use_unit(bint writing) noexcept nogil:
    return 1 + _WRITER if writing else 1


cdef int _begin_use(SecureBuffer buf, bint writing) except -1:
    # A new user, after _require_live().  A destroy() that another thread
    # made in between wins: the user never touches the bytes.
    cdef int old = sk_fetch_add(&buf._users, _use_unit(writing))
    if old & _DOOMED:
        _end_use(buf, writing)
        _fatal_c(b"a use of a destroyed secure buffer (destroyed by another thread)")
    if (old & _USERS) == _USERS or (writing and (old & _WRITERS) == _WRITERS):
        _fatal_c(b"too many users of one secure buffer at once")
    return 0


cdef bint _end_use(SecureBuffer buf, bint writing) except? True:
    # The user is done with the bytes.  True when they were wiped while it
    # ran: it must throw away what it computed from them.  The last user of
    # a buffer destroyed in the meantime performs the deferred wipe.
    cdef int now = sk_fetch_sub(&buf._users, _use_unit(writing)) - _use_unit(writing)
    if (now & _USERS) == _USERS or (writing and (now & _WRITERS) == _WRITERS):
        _fatal_c(b"a secure buffer's use ended twice")
    if now & _WIPED_UNDER:
        _rewipe(buf)
        return True
    if (now & (_USERS | _DOOMED | _WIPED)) == _DOOMED and _claim_wipe(buf):
        _wipe_claimed(buf, False)
    return False


cdef inline bint _claim_wipe(SecureBuffer buf) noexcept nogil:
    return (sk_fetch_or(&buf._users, _WIPED) & _WIPED) == 0


cdef void _wipe_claimed(SecureBuffer buf, bint users_in_flight) noexcept:
    # The one wipe of a buffer.  When anything can still reach the bytes,
    # _WIPED_UNDER is set before they are zeroed, so that a user ending from
    # then on zeroes again what it wrote after this wipe.
    cdef bint reachable = (users_in_flight or buf._exports != 0 or buf._readers != 0
                           or buf._writers != 0)
    if reachable:
        sk_fetch_or(&buf._users, _WIPED_UNDER)
    _slot_wipe(<Slot *>buf._c_slot, buf._c_data, buf._size, buf._state, not reachable)
    buf._state = SK_DESTROYED
    _ring_unraise(buf)


cdef inline void _ring_unraise(SecureBuffer buf) noexcept nogil:
    global _borrowed_ring_keys
    if sk_fetch_and(&buf._users, ~_RING_RAISED) & _RING_RAISED:
        _borrowed_ring_keys -= 1


cdef void _rewipe(SecureBuffer buf) noexcept:
    # Zero the bytes of a wiped buffer again (what a user wrote after the
    # wipe), leaving its protection as the wipe left it.  No canary check:
    # the wipe zeroed the canary.
    cdef Slot *slot = <Slot *>buf._c_slot
    cdef int left
    if slot == NULL:
        return                            # destroyed by fork(): not ours any more
    left = slot.page.level if slot.page != NULL else slot.level
    if left == SK_READWRITE:
        sodium.sodium_memzero(buf._c_data, buf._size)
    elif _zero_through_proc(buf._c_data, buf._size) != 0:
        # Through /proc/self/mem rather than by lifting the protection: no
        # stale access gets a window, and no mapping is needed at
        # vm.max_map_count.  Without /proc: lift, zero, lower.
        if slot.page != NULL:
            if _ring_page_set(slot.page, SK_READWRITE, True) != 0:
                _fatal_c(b"cannot make a KeyRing page writable to wipe a key again")
            sodium.sodium_memzero(buf._c_data, buf._size)
            if _ring_page_set(slot.page, left, True) != 0:
                _fatal_c(b"cannot restore the protection of a KeyRing page")
        else:
            if _protect_to_wipe(slot.start, slot.length, PROT_READ | PROT_WRITE) != 0:
                _fatal_c(b"cannot make a secure buffer writable to wipe it again")
            sodium.sodium_memzero(buf._c_data, buf._size)
            if _protect_to_wipe(slot.start, slot.length, _prot(left)) != 0:
                _fatal_c(b"cannot make a wiped secure buffer inaccessible")


cdef bint _destroy_buffer(SecureBuffer buf, bint now) noexcept:
    # destroy() itself, in C: wipe_all() and KeyRing.destroy() call this with
    # `now`, so that neither a subclass's destroy() nor any other Python code
    # runs while they walk the registry.  False when it was destroyed already.
    cdef int old
    if buf._c_slot == NULL:
        return False                      # destroyed by fork()
    old = sk_fetch_or(&buf._users, _DOOMED)
    if not (old & _DOOMED):
        # Writers may be in flight: it is wiped now (what they write after
        # the wipe is zeroed again as they end).
        now = now or buf._base == SK_READWRITE or (old & _WRITERS) != 0
        buf._base = SK_DESTROYED
    if ((old & _USERS) == 0 or now) and _claim_wipe(buf):
        _wipe_claimed(buf, (old & _USERS) != 0)
    return not (old & _DOOMED)


cdef int _lost(SecureBuffer buf, const char *what) except -1:
    # Raise for a user whose buffer was wiped (or destroyed, for a fill)
    # while it ran.
    from securekeys.errors import KeyDestroyedError
    raise KeyDestroyedError(f"{what.decode()}: the {type(buf).__name__} was destroyed "
                            f"(wipe_all(), KeyRing.destroy() or destroy()) while in use; "
                            f"its result was wiped")


cdef unsigned char *_fill_begin(SecureBuffer buf, const char *what) except NULL:
    # The library's own fills of a new buffer (read_key, create_key): live,
    # READWRITE, unborrowed, then counted as a user.
    _require_live(buf, what)
    if buf._state != SK_READWRITE or buf._readers or buf._writers or buf._exports:
        _fatal(f"{what.decode()} into a {_PROTECTIONS[buf._state].name} or borrowed "
               f"{type(buf).__name__} (only a new one can be filled)")
    _begin_use(buf, True)
    return buf._c_data


cdef int _fill_end(SecureBuffer buf, const char *what) except -1:
    # End a fill.  A buffer destroyed or wiped during it has lost what was
    # written (wiped by the last user, or again by this one): KeyDestroyedError.
    cdef bint wiped = _end_use(buf, True)
    if wiped or _is_doomed(buf):
        _lost(buf, what)
    return 0


cdef int _in_flight(SecureBuffer buf) noexcept nogil:
    return sk_load(&buf._users) & _USERS
