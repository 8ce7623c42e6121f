# Included by _memory.pyx: protection as state; SecureBuffer, SecureKey, borrows.
#
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
    if buf._state == SK_DESTROYED:
        if buf._c_slot == NULL:
            _fatal(f"{what.decode()} on a {type(buf).__name__} destroyed by fork(): "
                   f"keys do not survive into a child process")
        _fatal(f"{what.decode()} on a destroyed {type(buf).__name__}")
    return 0


cdef int _apply(SecureBuffer buf) except -1:
    cdef int target = buf._base
    if buf._state == SK_DESTROYED:
        return 0
    if buf._writers > 0:
        target = SK_READWRITE
    elif buf._readers > 0 and target < SK_READONLY:
        target = SK_READONLY
    if target != buf._state:
        if _slot_protect(<Slot *>buf._c_slot, target) != 0:
            raise_errno("mprotect on guarded memory", errno)
        buf._state = target
    return 0


cdef int _set_base(SecureBuffer buf, int level) except -1:
    cdef int previous = buf._base
    buf._base = level
    try:
        _apply(buf)
    except BaseException:
        buf._base = previous
        raise
    return 0


cdef int _unordered(SecureBuffer buf) except -1:
    raise TypeError(f"a {type(buf).__name__} has no order (comparing keys by order "
                    f"would leak them); only == with another secure buffer is defined")


cdef bint _destroy_buffer(SecureBuffer buf) noexcept:
    # destroy() itself, in C: wipe_all() and KeyRing.destroy() call this, so
    # that neither a subclass's destroy() nor any other Python code runs
    # while they walk the registry.  False when it was destroyed already.
    if buf._state == SK_DESTROYED:
        return False
    _slot_wipe(<Slot *>buf._c_slot, buf._c_data, buf._size, buf._state,
               buf._exports == 0 and buf._readers == 0 and buf._writers == 0)
    buf._state = SK_DESTROYED
    buf._base = SK_DESTROYED
    return True


# no_gc_clear: the collector must never clear `_owner`.  A KeyRing key in a
# reference cycle would otherwise lose its ring first, the ring would unmap
# its pages, and the key's __dealloc__ would wipe through freed bookkeeping.
# Holding the ring to the end is what keeps the key's memory alive as long as
# the key; a SecureBuffer itself never closes a cycle (its only reference is
# to a KeyRing, which holds none).
@cython.no_gc_clear
cdef class SecureBuffer:
    """A fixed-size buffer in guarded, locked, never-dumped memory.

    Guard pages on both sides (the data ends exactly at the trailing one), a
    canary before the data, ``mlock`` and ``MADV_DONTDUMP``.  Starts zero-filled
    and READWRITE.  Misuse (touching it while NOACCESS or after destroy())
    ends the process.
    """

    def __cinit__(self, size, KeyRing _ring=None):
        _settle_fork()
        cdef size_t n = _checked_size(size)
        cdef unsigned char *data = NULL
        if _ring is None:
            self._c_slot = _slot_take(n, &data)
        else:
            self._c_slot = _ring_take(<Ring *>_ring._c_ring, n, &data)
            self._owner = _ring      # the ring's pages live as long as its keys
        self._c_data = data
        self._size = n
        self._base = SK_READWRITE
        self._state = SK_READWRITE
        self._is_key = isinstance(self, SecureKey)
        _register(self)

    def __dealloc__(self):
        _settle_fork()     # a parent's slot must never come back to a child's pool
        cdef Slot *slot = <Slot *>self._c_slot
        _unregister(self)
        if slot != NULL:
            if self._state != SK_DESTROYED:
                _slot_wipe(slot, self._c_data, self._size, self._state, True)
            _slot_give_back(slot)
            self._c_slot = NULL
        self._c_data = NULL

    # -- the cimport API ----------------------------------------------------

    cdef const unsigned char *borrow_read(self) except NULL:
        _require_live(self, "a read borrow")
        self._readers += 1
        try:
            _apply(self)
        except BaseException:
            self._readers -= 1
            raise
        return self._c_data

    cdef unsigned char *borrow_write(self) except NULL:
        _require_live(self, "a write borrow")
        if self._is_key:
            _fatal_c(b"a write borrow of a SecureKey (keys never change once filled)")
        self._writers += 1
        try:
            _apply(self)
        except BaseException:
            self._writers -= 1
            raise
        return self._c_data

    cdef int release_read(self) except -1:
        if self._readers <= 0:
            _fatal_c(b"release_read() without a read borrow")
        self._readers -= 1
        return _apply(self)

    cdef int release_write(self) except -1:
        if self._writers <= 0:
            _fatal_c(b"release_write() without a write borrow")
        self._writers -= 1
        return _apply(self)

    cdef unsigned char *fill_ptr(self) except NULL:
        _require_live(self, "fill_ptr()")
        if self._state != SK_READWRITE or self._readers or self._writers:
            _fatal(f"fill_ptr() on a {_PROTECTIONS[self._state].name} or borrowed "
                   f"{type(self).__name__} (only a new one can be filled)")
        return self._c_data

    cdef int seal(self) except -1:
        _require_live(self, "seal()")
        return _set_base(self, SK_READONLY)

    cdef size_t nbytes(self) noexcept nogil:
        return self._size

    cdef int protection(self) noexcept nogil:
        return self._state

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
        _settle_fork()
        return _PROTECTIONS[self._state]

    @property
    def destroyed(self):
        """True once destroy() has wiped the buffer."""
        _settle_fork()
        return self._state == SK_DESTROYED

    @property
    def locked(self):
        """True when the pages really are mlocked (never swapped)."""
        _settle_fork()
        return self._c_slot != NULL and (<Slot *>self._c_slot).locked

    def noaccess(self):
        """Make the memory inaccessible: any touch ends the process."""
        _require_live(self, "noaccess()")
        _set_base(self, SK_NOACCESS)

    def readonly(self):
        """Make the memory read-only at the MMU."""
        _require_live(self, "readonly()")
        _set_base(self, SK_READONLY)

    def readwrite(self):
        """Make the memory readable and writable (never for a SecureKey)."""
        _require_live(self, "readwrite()")
        if self._is_key:
            _fatal_c(b"readwrite() on a SecureKey (keys never change once filled)")
        _set_base(self, SK_READWRITE)

    def destroy(self):
        """Wipe the bytes and make the memory inaccessible; idempotent.

        Always succeeds, even while memoryviews exist: touching one afterwards
        ends the process.  The memory is freed when the object is deallocated.
        """
        _settle_fork()
        _destroy_buffer(self)

    def readinto(self, fd):
        """Fill the buffer with read(2) straight from `fd` until full or EOF.

        `fd` is an int or an object with fileno().  The GIL is released while
        reading; EINTR and short reads are retried.  Returns the byte count.
        Needs READWRITE: writing into protected memory is fatal.
        """
        if isinstance(fd, bool):
            raise TypeError("fd must be an int or have fileno(), not bool")
        cdef int c_fd = PyObject_AsFileDescriptor(fd)
        _require_live(self, "readinto()")
        if self._state != SK_READWRITE:
            _fatal(f"readinto() on a {_PROTECTIONS[self._state].name} "
                   f"{type(self).__name__} (writing to protected memory)")
        return _fill_from_fd(self, c_fd)

    def reading(self):
        """Borrow for reading: ``with buf.reading() as view: ...``.

        Raises the protection to at least READONLY for the block, yields a
        read-only memoryview and restores the protection when the last borrow
        ends.  Borrows nest and may overlap across threads.
        """
        _require_live(self, "reading()")
        return _Borrow(self, False)

    def writing(self):
        """Borrow for writing: like reading(), with a writable memoryview."""
        _require_live(self, "writing()")
        if self._is_key:
            _fatal_c(b"writing() on a SecureKey (keys never change once filled)")
        return _Borrow(self, True)

    def __getbuffer__(self, Py_buffer *view, int flags):
        cdef bint writable
        _settle_fork()
        if self._state == SK_DESTROYED:
            _fatal(f"a memoryview of a destroyed {type(self).__name__}")
        if self._state == SK_NOACCESS:
            _fatal(f"a memoryview of a NOACCESS {type(self).__name__}")
        writable = self._state == SK_READWRITE and not self._is_key
        if flags & PyBUF_WRITABLE and not writable:
            raise BufferError(f"a {type(self).__name__} in state "
                              f"{_PROTECTIONS[self._state].name} is not writable")
        PyBuffer_FillInfo(view, self, self._c_data, self._size, not writable, flags)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self._exports -= 1

    def __eq__(self, other):
        """Constant-time comparison with another secure buffer.

        Anything else raises TypeError: an answer would come from an ordinary,
        early-exit comparison (or be a silent False for bytes).  Note that with
        a bytes-like object on the left (``bytearray(guess) == key``) Python
        asks that object first, and it compares through the buffer protocol,
        not in constant time: use hmac.compare_digest on a borrowed view.
        """
        if not isinstance(other, SecureBuffer):
            raise TypeError(
                f"a {type(self).__name__} compares only with another secure buffer, not "
                f"{type(other).__name__}: use hmac.compare_digest(view, other) on a view "
                f"from `with key.reading() as view:` (constant time)")
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
                wipe_stack_and_registers(_MEMCMP_STACK)   # both keys' bytes passed through them
            finally:
                that.release_read()
        finally:
            self.release_read()
        return rc == 0

    def __ne__(self, other):
        return not self.__eq__(other)

    # Keys have no order, and an answer from `key < guess` (given back by a
    # bytes-like object's own comparison) would leak the key byte by byte.
    def __lt__(self, other):
        _unordered(self)

    def __le__(self, other):
        _unordered(self)

    def __gt__(self, other):
        _unordered(self)

    def __ge__(self, other):
        _unordered(self)

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

    def __cinit__(self, SecureBuffer buf not None, bint write):
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


def create_key(size):
    """A new key of `size` random bytes, made inside guarded memory, READONLY."""
    cdef SecureKey key = SecureKey(size)
    cdef unsigned char *data = key.fill_ptr()
    with nogil:
        sodium.randombytes_buf(data, key._size)
    key.seal()
    return key


_KEY_PAIR_FIELDS = ("private", "secret", "private_key", "secret_key",
                    "public", "public_key", "identity", "identity_key",
                    "rx", "tx")      # crypto.SessionKeys


def destroy_key(obj):
    """Destroy a secure buffer, or every secure buffer of a key pair.

    A key pair is a mapping or an object whose keys/attributes named private,
    secret, private_key, secret_key, public, public_key, identity,
    identity_key, rx or tx hold secure buffers (every pair of
    securekeys.crypto: signing, key exchange, box, session keys).  Anything else raises TypeError.
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


def wipe_all():
    """Destroy every live secure buffer in the process; return how many.

    Every memoryview of them dies on its next touch (memguard's Purge).
    """
    cdef void *node = _registry_head
    cdef SecureBuffer buf
    cdef Py_ssize_t count = 0
    _settle_fork()
    while node != NULL:
        buf = <SecureBuffer>node
        node = buf._c_next
        count += _destroy_buffer(buf)
    return count
