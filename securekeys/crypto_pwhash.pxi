# Password hashing (included by crypto.pyx): Argon2id stretches a password in
# guarded memory into a key, with its working memory in guarded memory too.
#
# Why not libsodium's crypto_pwhash(): it mmaps its `memlimit` bytes of
# working memory itself, as ordinary anonymous memory (not locked, not
# MADV_DONTDUMP, no guard pages), and the derived key can be rebuilt from
# that memory (the last block, and every block before it).  The Argon2
# reference library's argon2_ctx() computes the same function (libsodium's
# Argon2 is that code) and takes an allocator for its working memory, so the
# memory is a SecureBuffer here.  The parameters are exactly those of
# crypto_pwhash(ALG_ARGON2ID13) (libsodium 1.0.18 pwhash_argon2id.c and
# argon2.c): Argon2id v1.3, one lane, one thread, t_cost = opslimit,
# m_cost = memlimit // 1024 KiB (rounded down to a multiple of 4 by both
# libraries), a 16-byte salt, no secret, no associated data, and flags 0,
# so that Argon2 never writes to the password (a READONLY borrow).

PWHASH_SALT_BYTES = sodium.crypto_pwhash_SALTBYTES
OPSLIMIT_MIN = sodium.crypto_pwhash_OPSLIMIT_MIN
OPSLIMIT_INTERACTIVE = sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE
OPSLIMIT_MODERATE = sodium.crypto_pwhash_OPSLIMIT_MODERATE
OPSLIMIT_SENSITIVE = sodium.crypto_pwhash_OPSLIMIT_SENSITIVE
OPSLIMIT_MAX = sodium.crypto_pwhash_OPSLIMIT_MAX
MEMLIMIT_MIN = sodium.crypto_pwhash_MEMLIMIT_MIN
MEMLIMIT_INTERACTIVE = sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE
MEMLIMIT_MODERATE = sodium.crypto_pwhash_MEMLIMIT_MODERATE
MEMLIMIT_SENSITIVE = sodium.crypto_pwhash_MEMLIMIT_SENSITIVE
MEMLIMIT_MAX = sodium.crypto_pwhash_MEMLIMIT_MAX


# Argon2's allocator callbacks take no user pointer.  The derivation they
# belong to is found through a thread-local pointer instead: with threads=1
# argon2_ctx() allocates and frees on the thread that called it, and that
# thread runs one argon2_ctx() at a time.
cdef extern from *:
    """
    /* securekeys crypto_pwhash.pxi: the _Argon2Call running on this thread. */
    static __thread void *securekeys_argon2_call = NULL;
    """
    void *securekeys_argon2_call


cdef struct _Argon2Call:
    void *memory     # its _Argon2Memory (a borrowed reference: password_key holds it)
    int rc           # what argon2_ctx() returned


cdef class _Argon2Memory:
    # The working memory of one derivation: a SecureBuffer, borrowed for
    # writing while Argon2 holds it, and what went wrong getting or giving it back.
    cdef SecureBuffer buffer
    cdef unsigned char *ptr
    cdef object error

    cdef int take(self, size_t size) except -1:
        if self.buffer is not None:
            raise RuntimeError("Argon2 asked for its working memory twice")
        buffer = SecureBuffer(size)
        self.ptr = buffer.borrow_write()
        self.buffer = buffer
        return 0

    cdef int discard(self) except -1:
        # Release and destroy (wipe) the buffer, if it is still held.
        cdef SecureBuffer buffer = self.buffer
        if buffer is None:
            return 0
        self.buffer = None
        self.ptr = NULL
        try:
            buffer.release_write()
        finally:
            buffer.destroy()
        return 0


cdef _Argon2Memory _current_memory() noexcept:
    cdef _Argon2Call *call = <_Argon2Call *>securekeys_argon2_call
    if call == NULL:
        return None
    return <_Argon2Memory>call.memory


# Both callbacks take the GIL back in the middle of the nogil derivation.
# That is acceptable because each runs once per derivation (at its start and
# at its end), for the microseconds of an mmap/mprotect (and, at the end, the
# wipe of `memlimit` bytes), against the milliseconds to seconds of Argon2
# that run without the GIL.  Neither lets an exception escape into C: it is
# kept and raised by password_key once argon2_ctx() has returned.

cdef int _argon2_allocate(uint8_t **memory, size_t size) noexcept with gil:
    # Argon2 ignores the int returned: a failure is *memory left NULL.
    memory[0] = NULL
    cdef _Argon2Memory held = _current_memory()
    if held is None:
        return argon2.ARGON2_MEMORY_ALLOCATION_ERROR
    try:
        held.take(size)
    except BaseException as error:
        held.error = error
        return argon2.ARGON2_MEMORY_ALLOCATION_ERROR
    memory[0] = held.ptr
    return argon2.ARGON2_OK


cdef void _argon2_free(uint8_t *memory, size_t size) noexcept with gil:
    # Argon2 has zeroed the memory already; destroy() wipes it again (it
    # always does) and makes it PROT_NONE before it is unmapped.
    cdef _Argon2Memory held = _current_memory()
    if held is None or memory == NULL:
        return
    if memory != held.ptr:
        held.error = RuntimeError("Argon2 gave back memory it was not given")
        return
    try:
        held.discard()
    except BaseException as error:
        held.error = error


cdef int _argon2id_call(_Args *a) noexcept nogil:
    # The "key" is the password.  libsodium's crypto_pwhash(ALG_ARGON2ID13),
    # the working memory from the callbacks above.
    cdef argon2.argon2_context ctx
    cdef _Argon2Call *call = <_Argon2Call *>securekeys_argon2_call
    memset(&ctx, 0, sizeof(ctx))
    ctx.out = a.out
    ctx.outlen = <uint32_t>a.outlen
    ctx.pwd = <uint8_t *>a.key          # never written: flags has no CLEAR_PASSWORD
    ctx.pwdlen = <uint32_t>a.keylen
    ctx.salt = <uint8_t *>a.salt
    ctx.saltlen = <uint32_t>sodium.crypto_pwhash_SALTBYTES
    ctx.t_cost = <uint32_t>a.opslimit
    ctx.m_cost = <uint32_t>(a.memlimit // 1024)
    ctx.lanes = 1
    ctx.threads = 1
    ctx.version = argon2.ARGON2_VERSION_13
    ctx.allocate_cbk = _argon2_allocate
    ctx.free_cbk = _argon2_free
    ctx.flags = argon2.ARGON2_DEFAULT_FLAGS
    call.rc = argon2.argon2_ctx(&ctx, argon2.Argon2_id)
    return call.rc


# Always without the GIL (Argon2 takes milliseconds to seconds).  A failure
# is looked at by password_key, which knows argon2_ctx()'s code.
cdef _Op _ARGON2ID = _Op(call=_argon2id_call, name=b"argon2_ctx",
                         failure=SODIUM_INTERNAL, heavy=True, stack=_STACK_ARGON2)


cdef object _argon2_error(int rc, object error):
    # The exception for a failed argon2_ctx().  The limits were checked
    # before the call, so the one expected failure is the working memory:
    # the allocator's own exception when it raised one (MemoryError, or
    # LockError under the "require" lock policy).
    if error is not None:
        return error
    if rc == argon2.ARGON2_MEMORY_ALLOCATION_ERROR:
        return MemoryError("argon2_ctx() failed: not enough memory for these limits")
    message = argon2.argon2_error_message(rc).decode("ascii", "replace")
    return RuntimeError(f"Argon2 argon2_ctx() failed unexpectedly ({rc}: {message})")


def password_key(password, salt, size=32, *, opslimit=OPSLIMIT_INTERACTIVE,
                 memlimit=MEMLIMIT_INTERACTIVE):
    """Stretch a password (a SecureBuffer) into a new READONLY SecureKey.

    Argon2id with a 16-byte salt, byte for byte libsodium's
    crypto_pwhash(ALG_ARGON2ID13); `size` is at least 16.  `opslimit` /
    `memlimit` default to libsodium's INTERACTIVE limits
    (OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE).  The GIL is released while
    Argon2 runs.

    Argon2's `memlimit` bytes of working memory are guarded memory, like a
    key's: guard pages, MADV_DONTDUMP, wiped on fork and when done, locked
    when RLIMIT_MEMLOCK allows.  The lock policy applies to them: under
    "require", `memlimit` bytes more must be lockable, or LockError.
    MemoryError when the working memory cannot be had.
    """
    global securekeys_argon2_call
    cdef SecureBuffer pw = _secure_arg(password, "password", 0)
    cdef size_t n = _int_in(size, "size", sodium.crypto_pwhash_BYTES_MIN,
                            min(sodium.crypto_pwhash_BYTES_MAX, <size_t>(PY_SSIZE_T_MAX // 2)))
    cdef _Args a = _NO_ARGS
    a.opslimit = _int_in(opslimit, "opslimit", sodium.crypto_pwhash_OPSLIMIT_MIN,
                         sodium.crypto_pwhash_OPSLIMIT_MAX)
    a.memlimit = _int_in(memlimit, "memlimit", sodium.crypto_pwhash_MEMLIMIT_MIN,
                         sodium.crypto_pwhash_MEMLIMIT_MAX)
    if pw.nbytes() > sodium.crypto_pwhash_PASSWD_MAX:
        raise ValueError(f"password must be at most {sodium.crypto_pwhash_PASSWD_MAX} bytes long")
    cdef _Argon2Memory held = _Argon2Memory()
    cdef _Argon2Call call
    call.memory = <void *>held
    call.rc = argon2.ARGON2_OK
    # A derivation started by a signal handler while the allocator runs
    # Python code nests on this thread: it puts back the outer one's pointer.
    cdef void *outer = securekeys_argon2_call
    cdef _In s = _NO_INPUT
    try:
        _input_fixed(salt, &s, "salt", sodium.crypto_pwhash_SALTBYTES, _READ_ONCE, NULL)   # hashed once
        a.salt = s.ptr
        securekeys_argon2_call = &call
        try:
            key = _run_into_new(&_ARGON2ID, &a, pw, SecureKey(n))
        except BaseException:
            if call.rc != argon2.ARGON2_OK:
                raise _argon2_error(call.rc, held.error) from None
            raise
        if held.error is not None:
            # Argon2 succeeded, but giving its memory back did not.
            key.destroy()
            raise held.error
        return key
    finally:
        securekeys_argon2_call = outer
        held.discard()
        _release(&s)
