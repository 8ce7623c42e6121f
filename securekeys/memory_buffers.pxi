# Included by _memory.pyx: SecureBuffer, SecureKey, borrows; create_key, wipe_all.
#
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
            # No user is left (each holds a reference).  Zero again what a
            # view or a user may have written after a wipe that ran under it:
            # the slot must reach the pool clean.
            if _claim_wipe(self):
                _wipe_claimed(self, False)
            elif sk_load(&self._users) & _WIPED_UNDER:
                _rewipe(self)
            _slot_give_back(slot)
            self._c_slot = NULL
        self._c_data = NULL

    # -- the cimport API ----------------------------------------------------

    cdef const unsigned char *borrow_read(self) except NULL:
        _view_begin(self, False)
        try:
            _begin_use(self, False)
        except BaseException:
            _view_end(self, False)
            raise
        return self._c_data

    cdef unsigned char *borrow_write(self) except NULL:
        # A new SecureKey (READWRITE, not yet sealed) may be borrowed for
        # writing: that is how the crypto runner fills a derived key.
        if self._is_key and self._base != SK_READWRITE:
            _require_live(self, "a write borrow")
            _fatal_c(b"a write borrow of a SecureKey (keys never change once filled)")
        _view_begin(self, True)
        try:
            _begin_use(self, True)
        except BaseException:
            _view_end(self, True)
            raise
        return self._c_data

    cdef int release_read(self) except -1:
        if self._readers <= 0:
            _fatal_c(b"release_read() without a read borrow")
        self._readers -= 1
        if _end_use(self, False):
            _lost(self, "a read borrow")
        return _apply(self)

    cdef int release_write(self) except -1:
        if self._writers <= 0:
            _fatal_c(b"release_write() without a write borrow")
        self._writers -= 1
        if _end_use(self, True):
            _lost(self, "a write borrow")
        return _apply(self)

    cdef unsigned char *fill_ptr(self) except NULL:
        _require_live(self, "fill_ptr()")
        if self._state != SK_READWRITE or self._readers or self._writers:
            _fatal(f"fill_ptr() on a {_PROTECTIONS[self._state].name} or borrowed "
                   f"{type(self).__name__} (only a new one can be filled)")
        return self._c_data

    cdef int seal(self) except -1:
        _settle_fork()
        if _is_doomed(self) and self._c_slot != NULL:
            # wipe_all() (or KeyRing.destroy()) ran while the caller filled
            # it through fill_ptr(): zero what was written since, and fail.
            if _claim_wipe(self):
                _wipe_claimed(self, False)
            _rewipe(self)
            _lost(self, "seal()")
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
        return _PROTECTIONS[SK_DESTROYED if _is_doomed(self) else self._state]

    @property
    def destroyed(self):
        """True once destroy() was called (it is wiped now, or when the last
        call already using it ends)."""
        _settle_fork()
        return _is_doomed(self)

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
        ends the process.  Never waits: a sealed buffer that calls running in
        other threads are using is unusable at once and wiped when the last
        of them ends; any other is wiped now.  The memory is freed when the
        object is deallocated.
        """
        _settle_fork()
        _destroy_buffer(self, False)

    def readinto(self, fd):
        """Fill the buffer with read(2) straight from `fd` until full or EOF.

        `fd` is an int or an object with fileno().  The GIL is released while
        reading; EINTR and short reads are retried.  Returns the byte count.
        Needs READWRITE: writing into protected memory is fatal.
        """
        if isinstance(fd, bool):
            raise TypeError("fd must be an int or have fileno(), not bool")
        cdef int c_fd = PyObject_AsFileDescriptor(fd)
        cdef size_t done
        _require_live(self, "readinto()")
        if self._state != SK_READWRITE:
            _fatal(f"readinto() on a {_PROTECTIONS[self._state].name} "
                   f"{type(self).__name__} (writing to protected memory)")
        _begin_use(self, True)
        try:
            done = _fill_from_fd(self, c_fd)
        except OSError:
            # EFAULT: the buffer was wiped and revoked under the read.
            _fill_end(self, "readinto()")
            raise
        except BaseException:
            _end_use(self, True)
            raise
        _fill_end(self, "readinto()")
        return done

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
        if _is_doomed(self):
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
                f"state={self.state.name} locked={self.locked}>")

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
        _view_begin(self._buf, self._write)
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
        _view_end(self._buf, self._write)


def create_key(size):
    """A new key of `size` random bytes, made inside guarded memory, READONLY."""
    cdef SecureKey key = SecureKey(size)
    _fill_random(key, "create_key()", key._size >= _RANDOM_NOGIL_MIN)
    return key


cdef enum:
    _RANDOM_NOGIL_MIN = 4096      # below this, getrandom() is quicker than giving up the GIL


cdef int _fill_random(SecureBuffer key, const char *what, bint without_gil) except -1:
    # getrandom(2) straight into the key, then seal it.  Not libsodium's
    # randombytes_buf(): a key wiped and revoked under the fill (wipe_all())
    # makes the kernel say EFAULT, which libsodium would take for misuse.
    cdef unsigned char *data = _fill_begin(key, what)
    cdef size_t done = 0
    cdef ssize_t got = 0
    cdef int err = 0
    while done < key._size and err == 0:
        if without_gil:
            with nogil:
                got = system.getrandom(data + done, key._size - done, 0)
                err = errno if got < 0 else 0
        else:
            got = system.getrandom(data + done, key._size - done, 0)
            err = errno if got < 0 else 0
        if got > 0:
            done += <size_t>got
        elif err == EINTR:
            err = 0
    _fill_end(key, what)          # raises if it was wiped meanwhile (EFAULT then)
    if err != 0:
        sodium.sodium_memzero(data, key._size)
        raise_errno("getrandom", err)
    return key.seal()


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
        count += _destroy_buffer(buf, True)
    return count
