# The cimport contract of securekeys' guarded memory.
#
# This file fixes the binary layout of SecureBuffer for every module compiled
# against it, so it is kept small: the fields (a layout must be declared;
# none is API), and only the `cdef` methods documented under "Using
# securekeys from Cython" in the README.  Private helpers are module-level
# `cdef` functions of _memory.pyx, or inline helpers in _checks.pxd /
# _fdio.pxd, and are part of no ABI.

# Protection levels, ordered so that a stronger access need is a larger number.
cdef enum:
    SK_NOACCESS = 0
    SK_READONLY = 1
    SK_READWRITE = 2
    SK_DESTROYED = 3

cdef class SecureBuffer:
    cdef unsigned char *_c_data    # user data; ends exactly at the trailing guard page
    cdef size_t _size
    cdef int _base                 # protection the owner asked for
    cdef int _state                # protection the MMU enforces now
    cdef int _readers              # active read borrows
    cdef int _writers              # active write borrows
    cdef int _exports              # buffers exported (memoryviews, ...) not yet released
    cdef int _users                # in-flight users and lifetime bits, atomic (memory_lifetime.pxi)
    cdef bint _is_key              # never writable once filled
    cdef void *_c_slot             # the allocator's slot holding the data
    cdef object _owner             # the KeyRing whose pages hold the data, or None
    cdef void *_c_prev             # registry of live buffers (borrowed references)
    cdef void *_c_next

    # Borrow the bytes without a copy: protection is raised as needed and the
    # borrow is counted as an in-flight user; the pointer is valid until the
    # matching release.  Call with the GIL held; use the pointer without it.
    # A destroyed buffer, or a write borrow of a sealed SecureKey, is fatal.
    # destroy() of a sealed buffer while borrowed waits for the release to
    # wipe it; wipe_all() or KeyRing.destroy() wipe it at once.
    cdef const unsigned char *borrow_read(self) except NULL
    cdef unsigned char *borrow_write(self) except NULL
    # End a borrow; the last one out restores the protection.  Raises
    # KeyDestroyedError (after wiping again what the borrower may have
    # written) when the buffer was wiped while borrowed: what was computed
    # from it must then be thrown away.
    cdef int release_read(self) except -1
    cdef int release_write(self) except -1
    # Fill a new buffer or key: a new SecureKey is born READWRITE only so
    # that it can be filled once.  fill_ptr() gives its first byte while it is
    # still READWRITE and unborrowed (anything else is fatal); seal() then
    # makes it READONLY, for good in the case of a SecureKey; it raises
    # KeyDestroyedError (and wipes again) when the buffer was destroyed or
    # wiped while being filled.
    cdef unsigned char *fill_ptr(self) except NULL
    cdef int seal(self) except -1
    # Size in bytes and current protection (SK_* above).
    cdef size_t nbytes(self) noexcept nogil
    cdef int protection(self) noexcept nogil

cdef class SecureKey(SecureBuffer):
    pass

cdef class KeyRing:
    cdef void *_c_ring             # the allocator's Ring
