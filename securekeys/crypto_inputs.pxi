# Public inputs (included by crypto.pyx): read in place, without a copy,
# unless the libsodium call reads them more than once.


cdef enum:
    # How often the libsodium call reads an input (the `reads` argument).
    _READ_ONCE = 1
    # More than once: a check, then a use.  crypto_aead_*_decrypt verifies
    # the tag over the ciphertext, then decrypts it in a second pass;
    # crypto_sign_verify_detached hashes R and the public key, then compares
    # R and decodes the key again; crypto_sign_detached hashes the message
    # for the nonce, then again for the challenge; crypto_auth_verify
    # compares the tag twice.  If the bytes change in between, the result
    # belongs to no input anyone gave: a forged plaintext, a forged
    # signature accepted, or one nonce for two messages (the secret key).
    _READ_TWICE = 2


# A public input.  `bytes` is read directly; other objects are held through
# the buffer protocol, a SecureBuffer through a counted borrow.  Start from
# _NO_INPUT: _release() is then safe whether or not _input() ran.
cdef struct _In:
    const unsigned char *ptr
    Py_ssize_t len
    void *borrowed           # the SecureBuffer borrowed (a reference held by the caller or `owned`)
    void *owned              # our guarded snapshot (a reference we hold), or NULL
    unsigned char *copy      # our heap snapshot of a public input, or NULL
    bint has_view
    Py_buffer view

cdef _In _NO_INPUT           # all zero: C zero-initialises statics


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


cdef int _copy_call(_Args *a) noexcept nogil:
    memcpy(a.out, a.key, a.keylen)
    return 0


# Copying a SecureBuffer is a computation on secret bytes like any other: it
# goes through the runner, which borrows the source and wipes after the copy
# (memcpy leaves the bytes in vector registers).
cdef _Op _COPY = _Op(call=_copy_call, name=b"memcpy", failure=SODIUM_INTERNAL,
                     heavy=False, stack=_STACK_SMALL)


cdef int _hold_still(_In *inp) except -1:
    # Make an input that a call reads twice immune to change during the call.
    # Only `bytes` can never change.  Anything else can, and holding the GIL
    # would not stop it: a buffer may be a shared mmap another process
    # writes, or memory a C thread fills; even a sealed SecureKey changes when
    # another thread destroys it mid-call (wiped to zeros, and on a KeyRing
    # page still readable through its page-mates: sign() would then use one
    # nonce for two messages).  So the call reads a snapshot taken now.  A
    # torn snapshot is harmless: it is what the call then checks and uses,
    # consistently.
    cdef SecureBuffer original
    cdef SecureBuffer snapshot
    cdef unsigned char *copy
    cdef size_t n = <size_t>inp.len
    cdef _Args a = _NO_ARGS
    if inp.borrowed != NULL:
        original = <SecureBuffer>inp.borrowed
        # A SecureBuffer may hold a secret: its snapshot stays in guarded
        # memory, a new sealed SecureBuffer (destroyed if the copy fails).
        snapshot = _run_into_new(&_COPY, &a, original, SecureBuffer(n))
        inp.owned = <void *>snapshot
        Py_INCREF(snapshot)           # dropped by _release()
        inp.ptr = snapshot.borrow_read()
        inp.borrowed = <void *>snapshot
        original.release_read()
        return 0
    if not inp.has_view:
        return 0                      # bytes
    # Public bytes: a plain heap copy; the view is given back at once.
    copy = <unsigned char *>PyMem_RawMalloc(n if n > 0 else 1)
    if copy == NULL:
        raise MemoryError(f"cannot snapshot a {n}-byte input")
    if _large(n, 0):
        with nogil:
            memcpy(copy, inp.ptr, n)
    else:
        memcpy(copy, inp.ptr, n)
    inp.copy = copy
    inp.ptr = copy
    inp.has_view = False
    PyBuffer_Release(&inp.view)
    return 0


cdef int _input(object obj, _In *inp, str name, int reads) except -1:
    _read_in_place(obj, inp, name)
    if reads == _READ_TWICE:
        _hold_still(inp)
    return 0


cdef inline int _input_fixed(object obj, _In *inp, str name, size_t expected, int reads) except -1:
    _read_in_place(obj, inp, name)
    if <size_t>inp.len != expected:
        _wrong_length(name, expected, inp.len)    # the caller's finally releases it
    if reads == _READ_TWICE:
        _hold_still(inp)
    return 0


cdef inline int _input_or_none(object obj, _In *inp, str name) except -1:
    # An optional input (AAD, read once): None is the same as empty.
    if obj is not None:
        _input(obj, inp, name, _READ_ONCE)
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
    if inp.has_view:
        inp.has_view = False
        PyBuffer_Release(&inp.view)
    if inp.copy != NULL:
        PyMem_RawFree(inp.copy)
        inp.copy = NULL
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
