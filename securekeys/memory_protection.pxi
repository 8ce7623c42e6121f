# Included by _memory.pyx: protection as state, and the checks every entry
# point makes before it touches a buffer (alive, not destroyed by fork).

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


# Protection as state: the protection in force (`_state`) is the owner's
# choice (`_base`), raised for as long as borrows need more.  A change of
# state is an mprotect() that succeeded.

cdef inline int _require_live(SecureBuffer buf, const char *what) except -1:
    _settle_fork()
    if _is_doomed(buf):
        if buf._c_slot == NULL:
            _fatal(f"{what.decode()} on a {type(buf).__name__} destroyed by fork(): "
                   f"keys do not survive into a child process")
        _fatal(f"{what.decode()} on a destroyed {type(buf).__name__}")
    return 0


cdef int _apply(SecureBuffer buf) except -1:
    cdef int target = buf._base
    if target == SK_DESTROYED or buf._state == SK_DESTROYED:
        return 0          # the wipe decides the protection (memory_lifetime.pxi)
    if buf._writers > 0:
        target = SK_READWRITE
    elif buf._readers > 0 and target < SK_READONLY:
        target = SK_READONLY
    if target != buf._state:
        if (<Slot *>buf._c_slot).page != NULL:
            return _apply_ring(buf, target)
        if _slot_protect(<Slot *>buf._c_slot, target) != 0:
            _raise_protect_error("mprotect on guarded memory", errno)
        buf._state = target
    return 0


cdef int _apply_ring(SecureBuffer buf, int target) except -1:
    # A KeyRing key's page is shared: lowering it at the end of a borrow can
    # split a mapping twice.  A borrow that raises the key above its own
    # protection first holds two spare mappings for that (memory_wipe.pxi),
    # so that the end of the borrow cannot fail for want of one.
    global _borrowed_ring_keys
    cdef bint was_raised = (sk_load(&buf._users) & _RING_RAISED) != 0
    cdef bint raised = target > buf._base
    if raised and not was_raised:
        _borrowed_ring_keys += 1
        sk_fetch_or(&buf._users, _RING_RAISED)
        if not _take_spares():
            _ring_unraise(buf)
            _raise_protect_error("a borrow of a KeyRing key", ENOMEM)
    if _slot_protect(<Slot *>buf._c_slot, target) != 0:
        if raised and not was_raised:
            _ring_unraise(buf)
        _raise_protect_error("mprotect of a KeyRing page", errno)
    if was_raised and not raised:
        _ring_unraise(buf)
    buf._state = target
    return 0


cdef int _raise_protect_error(str what, int err) except -1:
    # A protection change refused at vm.max_map_count is the OSError the
    # documentation names (ENOMEM), not a MemoryError: memory is not short.
    if err == ENOMEM:
        raise OSError(ENOMEM, f"{what}: the process is at vm.max_map_count (no mapping left "
                              f"to split); nothing was made more accessible")
    return raise_errno(what, err)


cdef int _set_base(SecureBuffer buf, int level) except -1:
    cdef int previous = buf._base
    buf._base = level
    try:
        _apply(buf)
    except BaseException:
        buf._base = previous
        raise
    return 0


cdef int _view_begin(SecureBuffer buf, bint write) except -1:
    # A borrow's protection: raised to what it needs for as long as it lasts.
    _require_live(buf, "a write borrow" if write else "a read borrow")
    if write:
        if buf._is_key and buf._base != SK_READWRITE:
            _fatal_c(b"a write borrow of a SecureKey (keys never change once filled)")
        buf._writers += 1
    else:
        buf._readers += 1
    try:
        _apply(buf)
    except BaseException:
        _view_end(buf, write)
        raise
    return 0


cdef int _view_end(SecureBuffer buf, bint write) except -1:
    if write:
        buf._writers -= 1
    else:
        buf._readers -= 1
    return _apply(buf)


cdef int _unordered(SecureBuffer buf) except -1:
    raise TypeError(f"a {type(buf).__name__} has no order (comparing keys by order "
                    f"would leak them); only == with another secure buffer is defined")
