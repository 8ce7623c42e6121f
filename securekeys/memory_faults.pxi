# Included by _memory.pyx: a fault the MMU raises on guarded memory.
#
# Touching a stale view after destroy() or noaccess(), writing to a READONLY
# key, or running into a guard page raises SIGSEGV (SIGBUS for secretmem
# past its end).  This handler, installed at import and chained to whatever
# handler was there before (faulthandler, say), recognises a fault address
# inside guarded memory, goes through the fatal path (wipe every live key,
# one line saying what was hit), then restores the default action and
# returns: the instruction faults again and the process dies of the signal,
# so its exit status stays a signal death.  Faults anywhere else go to the
# previous handler untouched.  Async-signal-safe only: no GIL, no Python, no
# allocation.

cdef sigaction_t _previous_actions[2]     # for SIGSEGV, SIGBUS
cdef const char *_INHERITED = b"a key inherited through fork() (keys do not survive into a child process)"


cdef const char *_what_in_chunk(Chunk *chunk, size_t page_index) noexcept nogil:
    cdef size_t stride = chunk.slot_pages + 1
    cdef RingPage *page
    cdef Slot *slot
    if chunk.pages != NULL:     # a KeyRing run: guard, pages, guard
        if page_index == 0 or page_index > _RING_RUN_PAGES:
            return b"a guard page around a KeyRing run"
        page = &chunk.pages[page_index - 1]
        if page.level == SK_READONLY:
            return b"a READONLY KeyRing page (a write to a key)"
        return b"a NOACCESS KeyRing page (its keys are NOACCESS or destroyed)"
    if page_index % stride == 0:
        return b"a guard page between secure buffers (a read or write past the end of one)"
    slot = &chunk.slots[page_index // stride]
    if slot.free:
        return b"a freed secure buffer (a pointer kept past its owner)"
    if slot.wiped:
        return b"a destroyed secure buffer (a view or pointer kept past destroy())"
    if slot.level == SK_READONLY:
        return b"a READONLY secure buffer (a write to a key)"
    return b"a NOACCESS secure buffer"


cdef const char *_what_is_at(const unsigned char *address) noexcept nogil:
    """What guarded memory holds `address`, or NULL when none does."""
    cdef Chunk *chunk = _chunks
    while chunk != NULL:
        if chunk.base <= address < chunk.base + chunk.length:
            # Sealed by fork(), or a raw fork's child (the marker reads 0):
            # either way the parent's, not yet settled.
            if _forked or _alive[0] == 0:
                return _INHERITED
            return _what_in_chunk(chunk, <size_t>(address - chunk.base) // _page_size)
        chunk = chunk.next
    chunk = _inherited
    while chunk != NULL:
        if chunk.base <= address < chunk.base + chunk.length:
            return _INHERITED
        chunk = chunk.next
    return NULL


cdef void _on_fault(int sig, siginfo_t *info, void *context) noexcept nogil:
    cdef const char *what = NULL
    if info.si_code > 0:        # a fault the kernel raised, not kill() or raise()
        what = _what_is_at(<const unsigned char *>info.si_addr)
    if what == NULL:
        system.chain_signal(&_previous_actions[1 if sig == SIGBUS else 0], sig, info, context)
        return
    _die_of(b"SIGBUS on " if sig == SIGBUS else b"SIGSEGV on ", what)
    # Die of this very signal, for certain: pending (it is blocked in its own
    # handler), it is delivered with the default action the moment the handler
    # returns, whether or not the access would fault again (another thread
    # may have changed the protection meanwhile).
    signal(sig, SIG_DFL)
    raise_(sig)


cdef int _install_fault_handler() except -1:
    cdef sigaction_t action
    memset(&action, 0, sizeof(action))
    action.sa_sigaction = _on_fault
    action.sa_flags = SA_SIGINFO | SA_ONSTACK
    sigemptyset(&action.sa_mask)
    if sigaction(SIGSEGV, &action, &_previous_actions[0]) != 0:
        raise_errno("sigaction(SIGSEGV)", errno)
    if sigaction(SIGBUS, &action, &_previous_actions[1]) != 0:
        raise_errno("sigaction(SIGBUS)", errno)
    return 0
