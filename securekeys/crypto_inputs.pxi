# Public inputs (included by crypto.pyx): read in place, without a copy,
# unless the call reads them more than once.


cdef enum:
    # How often one call reads an input (the `reads` argument): libsodium
    # itself, or our own two passes (the *_into decryptions check the tag,
    # then decrypt: the ciphertext, the nonce and the AAD are read twice).
    _READ_ONCE = 1
    # More than once.  crypto_aead_*_decrypt verifies the tag over the
    # ciphertext, then decrypts it in a second pass; crypto_sign_verify_detached
    # hashes R and the public key, then compares R and decodes the key again;
    # crypto_sign_detached hashes the message for the nonce, then again for
    # the challenge; crypto_auth_verify compares the tag twice; crypto_kx and
    # crypto_box_seal multiply by the peer's public key, then hash it.  If the
    # bytes change in between, the result belongs to no input anyone gave: a
    # forged plaintext, a forged signature accepted, session keys neither side
    # shares, or one nonce for two messages (the secret key).
    _READ_TWICE = 2
    # The room a caller gives on its stack for the snapshot of a fixed-size
    # input (nonce, public key, tag, signature): no allocation.
    _ROOM = 64

    # Who owns a buffer's memory (_exported_by).
    _ORDINARY = 0      # a bytearray, an mmap, ...: may change, holds no secret of ours
    _IMMUTABLE = 1     # `bytes` behind a memoryview: can never change
    _GUARDED = 2       # a SecureBuffer behind a memoryview: may hold a secret


# A public input.  `bytes` is read directly; other objects are held through
# the buffer protocol, a SecureBuffer through a counted borrow.  Start from
# _NO_INPUT: _release() is then safe whether or not _input() ran.
cdef struct _In:
    const unsigned char *ptr
    Py_ssize_t len
    void *borrowed           # the SecureBuffer borrowed (a reference held by the caller or `owned`)
    void *owned              # our guarded snapshot (a reference we hold), or NULL
    unsigned char *copy      # our snapshot in ordinary memory, wiped on release, or NULL
    bint has_view
    bint copy_on_heap        # `copy` is ours to free (else it is the caller's room)
    Py_buffer view

cdef _In _NO_INPUT           # all zero: C zero-initialises statics
cdef unsigned char _EMPTY[1] # where an empty snapshot points


cdef int _read_in_place(object obj, _In *inp, str name) except -1:
    cdef SecureBuffer buf
    if PyBytes_CheckExact(obj):
        inp.ptr = <const unsigned char *>PyBytes_AS_STRING(obj)
        inp.len = PyBytes_GET_SIZE(obj)
        return 0
    if isinstance(obj, SecureBuffer):
        buf = <SecureBuffer>obj
        inp.ptr = buf.borrow_read()
        inp.len = <Py_ssize_t>buf.nbytes()
        inp.borrowed = <void *>buf
        return 0
    if isinstance(obj, str) or not PyObject_CheckBuffer(obj):
        raise TypeError(f"{name} must be a bytes-like object, not {type(obj).__name__}")
    PyObject_GetBuffer(obj, &inp.view, PyBUF_SIMPLE)
    inp.has_view = True
    inp.ptr = <const unsigned char *>inp.view.buf
    inp.len = inp.view.len
    return 0


cdef int _exported_by(_In *inp) noexcept:
    # A memoryview -- what reading() returns, a slice of one, a memoryview
    # of one -- does not own its memory: it names the object that exported it
    # (memoryview.obj), and that object decides whether the bytes may hold
    # a secret.  Followed down the chain, never by a Python call.
    cdef void *owner = <void *>inp.view.obj
    cdef void *inner
    while owner != NULL and PyMemoryView_Check(<object>owner):
        inner = <void *>PyMemoryView_GET_BUFFER(<object>owner).obj
        if inner == owner:
            break
        owner = inner
    if owner == NULL:
        return _ORDINARY
    if isinstance(<object>owner, SecureBuffer):
        return _GUARDED
    if PyBytes_CheckExact(<object>owner):
        return _IMMUTABLE
    return _ORDINARY


cdef int _copy_call(_Args *a) noexcept nogil:
    memcpy(a.out, a.key, a.keylen)
    return 0


cdef int _copy_input_call(_Args *a) noexcept nogil:
    memcpy(a.out, a.m, a.mlen)
    return 0


# Copying guarded bytes is a computation on secret bytes like any other: it
# goes through the runner, which wipes after the copy (memcpy leaves the
# bytes in vector registers).  _COPY borrows the SecureBuffer it copies;
# _COPY_INPUT copies what a view of one shows (the view holds it).
cdef _Op _COPY = _Op(call=_copy_call, name=b"memcpy", failure=SODIUM_INTERNAL,
                     heavy=False, stack=_STACK_SMALL)
cdef _Op _COPY_INPUT = _Op(call=_copy_input_call, name=b"memcpy", failure=SODIUM_INTERNAL,
                           heavy=False, stack=_STACK_SMALL)


cdef int _keep_guarded(_In *inp, SecureBuffer snapshot) except -1:
    # The call reads `snapshot` (sealed, ours) instead.
    inp.owned = <void *>snapshot
    Py_INCREF(snapshot)               # dropped by _release()
    inp.ptr = snapshot.borrow_read()
    inp.borrowed = <void *>snapshot
    return 0


cdef int _drop_view(_In *inp) except -1:
    inp.has_view = False
    PyBuffer_Release(&inp.view)
    return 0


cdef int _hold_still(_In *inp, unsigned char *room, size_t room_len) except -1:
    # Make an input that a call reads twice immune to change during the call.
    # Only `bytes` can never change.  Anything else can, and holding the GIL
    # would not stop it: a buffer may be a shared mmap another process
    # writes, or memory a C thread fills; even a sealed SecureKey changes when
    # another thread destroys it mid-call (wiped to zeros, and on a KeyRing
    # page still readable through its page-mates: sign() would then use one
    # nonce for two messages).  So the call reads a snapshot taken now.  A
    # torn snapshot is harmless: it is what the call then checks and uses,
    # consistently.  Guarded bytes are snapshotted in guarded memory; others
    # in `room` (room_len bytes of the caller's stack) when they fit, else on
    # the heap; either is wiped by _release().
    cdef SecureBuffer original
    cdef size_t n = <size_t>inp.len
    cdef _Args a = _NO_ARGS
    cdef int owner
    if inp.borrowed != NULL:
        original = <SecureBuffer>inp.borrowed
        _keep_guarded(inp, _run_into_new(&_COPY, &a, original, SecureBuffer(n)))
        original.release_read()
        return 0
    if not inp.has_view:
        return 0                      # bytes
    owner = _exported_by(inp)
    if owner == _IMMUTABLE:
        return 0                      # a view of bytes: read in place
    if n == 0:
        inp.ptr = _EMPTY              # nothing to change, nothing to copy
        return _drop_view(inp)
    if owner == _GUARDED:
        a.m = inp.ptr
        a.mlen = n
        _keep_guarded(inp, _run_into_new(&_COPY_INPUT, &a, None, SecureBuffer(n)))
        return _drop_view(inp)
    return _copy_public(inp, room, room_len)


cdef int _copy_public(_In *inp, unsigned char *room, size_t room_len) except -1:
    cdef size_t n = <size_t>inp.len
    cdef unsigned char *copy = room
    if n > room_len:
        copy = <unsigned char *>PyMem_RawMalloc(n)
        if copy == NULL:
            raise MemoryError(f"cannot snapshot a {n}-byte input")
        inp.copy_on_heap = True
    if _large(n, 0):
        with nogil:
            memcpy(copy, inp.ptr, n)
    else:
        memcpy(copy, inp.ptr, n)
    inp.copy = copy
    inp.ptr = copy
    return _drop_view(inp)


cdef inline bint _may_change(_In *inp) noexcept:
    # Anything but `bytes` (which holds neither a view nor a borrow).
    return inp.has_view or inp.borrowed != NULL


cdef int _input(object obj, _In *inp, str name, int reads) except -1:
    _read_in_place(obj, inp, name)
    if reads == _READ_TWICE and _may_change(inp):
        _hold_still(inp, NULL, 0)
    return 0


cdef inline int _input_fixed(object obj, _In *inp, str name, size_t expected, int reads,
                             unsigned char *room) except -1:
    # `room`: NULL, or _ROOM bytes of the caller's stack for the snapshot of
    # an input read twice (fixed inputs are at most 64 bytes).
    _read_in_place(obj, inp, name)
    if <size_t>inp.len != expected:
        _wrong_length(name, expected, inp.len)    # the caller's finally releases it
    if reads == _READ_TWICE and _may_change(inp):
        _hold_still(inp, room, _ROOM if room != NULL else 0)
    return 0


cdef inline int _input_or_none(object obj, _In *inp, str name, int reads) except -1:
    # An optional input (AAD): None is the same as empty.
    if obj is not None:
        _input(obj, inp, name, reads)
    return 0


cdef inline int _release(_In *inp) except -1:
    # Safe to call twice and on an _In that _input() never filled.  A
    # `bytes` input (the common case) holds nothing: no call.
    if inp.has_view or inp.copy != NULL or inp.borrowed != NULL or inp.owned != NULL:
        return _release_held(inp)
    return 0


cdef int _release_held(_In *inp) except -1:
    cdef void *borrowed = inp.borrowed
    cdef void *owned = inp.owned
    cdef unsigned char *copy = inp.copy
    cdef size_t n = <size_t>inp.len
    if inp.has_view:
        _drop_view(inp)
    if copy != NULL:
        # A public input may still be someone's secret (a message in a
        # bytearray): no copy of it outlives the call.
        inp.copy = NULL
        if _large(n, 0):
            with nogil:
                sodium.sodium_memzero(copy, n)
        else:
            sodium.sodium_memzero(copy, n)
        if inp.copy_on_heap:
            inp.copy_on_heap = False
            PyMem_RawFree(copy)
    if borrowed != NULL:
        inp.borrowed = NULL
        (<SecureBuffer>borrowed).release_read()
    if owned != NULL:
        inp.owned = NULL
        try:
            (<SecureBuffer>owned).destroy()
        finally:
            Py_DECREF(<object>owned)
    return 0
