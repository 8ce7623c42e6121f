# cython: language_level=3, embedsignature=True, auto_pickle=False
"""Guarded memory for secrets: the only module that allocates secret memory.

Layers, bottom up:
  * the fatal path (`_fatal`): one line on stderr, wipe every live buffer, abort;
  * the registry of live buffers (an intrusive list; the fatal path walks it);
  * the region allocator (`_region_alloc` / `_region_protect` / `_region_free`):
    today libsodium's `sodium_malloc`, checked and made honest about `mlock`;
  * `SecureBuffer` / `SecureKey`: protection as state, borrows, buffer protocol.
"""

import enum

from cpython.buffer cimport PyBuffer_FillInfo, PyBUF_WRITABLE
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject_AsFileDescriptor
from libc.errno cimport errno, EINTR, EAGAIN, ENOMEM, EPERM
from libc.stdint cimport uintptr_t
from libc.stdlib cimport abort
from libc.string cimport strlen, memcpy
from posix.mman cimport mlock, madvise, MADV_DONTDUMP
from posix.unistd cimport read, write, sysconf, _SC_PAGESIZE

from securekeys.includes cimport sodium

cdef extern from "string.h" nogil:
    char *strerror(int errnum)

cdef extern from "Python.h":
    Py_ssize_t PY_SSIZE_T_MAX


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
        if buf._state != SK_DESTROYED:
            if sodium.sodium_mprotect_readwrite(buf._c_data) == 0:
                sodium.sodium_memzero(buf._c_data, buf._size)
                sodium.sodium_mprotect_noaccess(buf._c_data)
        node = buf._c_next


def live_buffers():
    """Number of secure buffers currently allocated in this process."""
    return _registry_count


# ---------------------------------------------------------------------------
# One helper turns a failed C call into an exception.

cdef int _raise_errno(str what, int err) except -1:
    raise OSError(err, f"{what}: {strerror(err).decode('utf-8', 'replace')}")


# ---------------------------------------------------------------------------
# The region allocator: the seam behind which pools and other backends go.
#
# libsodium's layout: [size page][guard][padding | 16-byte canary | data][guard].
# It ignores failures of mlock() and madvise(MADV_DONTDUMP); we repeat both
# calls on the same pages and check them, so `locked` tells the truth.

cdef size_t _page_size = <size_t>sysconf(_SC_PAGESIZE)
cdef enum:
    _CANARY_SIZE = 16          # libsodium's canary, right before the data
cdef unsigned char _canary[_CANARY_SIZE]


cdef inline unsigned char *_data_pages(unsigned char *data) noexcept nogil:
    # First page of the region that holds canary and data (page aligned).
    return <unsigned char *>(<uintptr_t>(data - _CANARY_SIZE) & ~(<uintptr_t>_page_size - 1))


cdef unsigned char *_region_alloc(size_t size, bint *locked) except NULL:
    cdef unsigned char *data = <unsigned char *>sodium.sodium_malloc(size)
    cdef unsigned char *pages
    cdef size_t length
    cdef int err
    if data == NULL:
        raise MemoryError(f"cannot allocate {size} bytes of guarded memory")
    sodium.sodium_memzero(data, size)   # sodium_malloc fills with 0xdb
    pages = _data_pages(data)
    length = <size_t>(data + size - pages)
    if madvise(pages, length, MADV_DONTDUMP) != 0:
        err = errno
        sodium.sodium_free(data)
        _raise_errno("madvise(MADV_DONTDUMP) on guarded memory", err)
    if mlock(pages, length) == 0:
        locked[0] = True
    else:
        err = errno
        if err not in (ENOMEM, EAGAIN, EPERM):
            sodium.sodium_free(data)
            _raise_errno("mlock on guarded memory", err)
        locked[0] = False   # over RLIMIT_MEMLOCK: swappable, and we say so
    return data


cdef inline int _region_protect(unsigned char *data, int level) noexcept nogil:
    if level == SK_READWRITE:
        return sodium.sodium_mprotect_readwrite(data)
    if level == SK_READONLY:
        return sodium.sodium_mprotect_readonly(data)
    return sodium.sodium_mprotect_noaccess(data)


cdef void _region_free(unsigned char *data) noexcept:
    if sodium.sodium_mprotect_readwrite(data) != 0:
        _fatal_c(b"cannot make guarded memory writable to wipe and free it")
    # sodium_free() would raise SIGSEGV on a bad canary without a word; check
    # first so the process says what happened.
    if sodium.sodium_memcmp(data - _CANARY_SIZE, _canary, _CANARY_SIZE) != 0:
        _fatal_c(b"the canary before a secure buffer was overwritten "
                 b"(a write ran past the start of the buffer)")
    sodium.sodium_free(data)   # wipes, unlocks and unmaps


cdef void _snapshot_canary() except *:
    cdef unsigned char *probe = <unsigned char *>sodium.sodium_malloc(1)
    if probe == NULL:
        raise MemoryError("cannot allocate guarded memory")
    memcpy(_canary, probe - _CANARY_SIZE, _CANARY_SIZE)
    sodium.sodium_free(probe)


if sodium.sodium_init() < 0:
    raise ImportError("securekeys: sodium_init() failed; libsodium is unusable")
if sodium.sodium_set_misuse_handler(_on_sodium_misuse) != 0:
    raise ImportError("securekeys: cannot install libsodium's misuse handler")
_snapshot_canary()


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

    def __cinit__(self, size):
        cdef size_t n = _checked_size(size)
        cdef bint locked = False
        self._c_data = _region_alloc(n, &locked)
        self._size = n
        self._locked = locked
        self._base = SK_READWRITE
        self._state = SK_READWRITE
        self._is_key = isinstance(self, SecureKey)
        _register(self)

    def __dealloc__(self):
        if self._c_data != NULL:
            _unregister(self)
            _region_free(self._c_data)
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

    cdef size_t nbytes(self) noexcept nogil:
        return self._size

    cdef int protection(self) noexcept nogil:
        return self._state

    # -- state machinery ----------------------------------------------------

    cdef int _require_live(self, const char *what) except -1:
        if self._state == SK_DESTROYED:
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
            if _region_protect(self._c_data, target) != 0:
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
        return self._locked

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
        if sodium.sodium_mprotect_readwrite(self._c_data) != 0:
            _fatal_c(b"cannot make a secure buffer writable to wipe it")
        sodium.sodium_memzero(self._c_data, self._size)
        if sodium.sodium_mprotect_noaccess(self._c_data) != 0:
            _fatal_c(b"cannot make a wiped secure buffer inaccessible")
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
                f"state={_PROTECTIONS[self._state].name} locked={bool(self._locked)}>")

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
    with nogil:
        sodium.randombytes_buf(key._c_data, key._size)
    key._set_base(SK_READONLY)
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
