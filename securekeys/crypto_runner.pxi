# The runner (included by crypto.pyx): the one place that borrows a key,
# chooses whether to release the GIL, calls libsodium and releases the key.
#
# Each libsodium function is wrapped once in a small `nogil` C function that
# takes the call's arguments as one _Args struct, and described once by an
# _Op (the wrapper, its name for errors, what a failure means, whether it is
# always worth releasing the GIL, how much stack it may leave secrets on).
# An operation then reads: validate, fill an _Args, `_run(&_THE_OP, &args,
# key)`.  The model is libsodium's own _sodium_mprotect(ptr, cb) in utils.c:
# one body, the varying part a pointer.


# The arguments of one call.  Start from _NO_ARGS and set what the call
# uses: the fields left zero are NULL pointers and empty lengths.
cdef struct _Args:
    # Set by the runner: the borrowed key (NULL when the call takes none).
    const unsigned char *key
    size_t keylen
    # Public inputs: the bulk input (message, plaintext or ciphertext) and the
    # AEAD's associated data decide whether to release the GIL.
    const unsigned char *m
    size_t mlen
    const unsigned char *ad
    size_t adlen
    # Fixed-size public inputs; the caller guarantees their sizes.
    const unsigned char *nonce
    const unsigned char *context
    const unsigned char *salt
    const unsigned char *tag      # a MAC tag or a signature to check
    const unsigned char *pk       # a public key to check against
    unsigned long long subkey_id
    unsigned long long opslimit
    size_t memlimit
    # The result: `outlen` bytes at `out`.  A call that reports how much it
    # wrote sets `written`; the runner checks it is exactly `outlen`.
    unsigned char *out
    size_t outlen
    unsigned long long written
    unsigned char *pk_out         # a key pair's public half
    unsigned char *out2           # a second secret result (kx: tx beside rx), `outlen` bytes too
    # Set by the runner: a secret state libsodium updates (secretstream),
    # borrowed for writing for the length of the call.
    unsigned char *state
    unsigned char flag            # secretstream: the tag pushed, or the tag pulled

cdef _Args _NO_ARGS              # all zero: C zero-initialises statics


# A libsodium call: 0 on success, as libsodium itself returns.
ctypedef int (*_Call)(_Args *args) noexcept nogil

cdef enum:
    # _Op.failure beyond _checks' SODIUM_*: a non-zero return is the answer
    # "not authentic" (a verify), not an error.
    _ANSWER = -1
    # ... or libsodium refusing a peer's public key (a low-order point,
    # whose shared secret would be all zeros): a ValueError.
    _REJECTED = -2
    # Below this many input bytes the call is shorter than releasing and
    # taking back the GIL; above it, other threads run while libsodium works.
    _NOGIL_MIN = 1024
    # _Op.stack: how much of the stack below the caller a call may leave
    # secrets on (libsodium 1.0.18 leaves BLAKE2b's output buffer, ChaCha20's
    # last block, message words, ... in its dead frames).  Measured deepest
    # use on x86-64 (AVX2), painting the stack: AEAD 2.3 KiB, HMAC 1.7 KiB,
    # BLAKE2b/KDF 1.5 KiB, Ed25519 signing 1.8 KiB, Argon2id 6.7 KiB; about
    # twice that, for other CPUs' code paths and compilers.
    _STACK_PUBLIC = 0         # no secret involved (verify): nothing to wipe
    _STACK_SMALL = 4096
    _STACK_ARGON2 = 16384

cdef struct _Op:
    _Call call
    const char *name    # the libsodium function, for error messages
    int failure         # what a non-zero return means: SODIUM_* or _ANSWER
    bint heavy          # always release the GIL (signing, key pairs, Argon2)
    size_t stack        # bytes of stack to wipe after the call (_STACK_*)


cdef inline bint _large(size_t a, size_t b) noexcept nogil:
    # Inputs of a + b bytes: worth releasing the GIL for?  (Cannot overflow.)
    return a >= _NOGIL_MIN or b >= _NOGIL_MIN or a + b >= _NOGIL_MIN


cdef int _call_and_wipe(const _Op *op, _Args *args) noexcept nogil:
    # The call, then its dead frames and the registers it may have left
    # secrets in zeroed, on the thread that made it and before anything else
    # runs there: no copy of a key, a plaintext or a derived secret outlives
    # the call on the stack (nor reaches a core file).
    cdef int rc = op.call(args)
    if op.stack != 0:
        wipe_stack_and_registers(op.stack)
    return rc


cdef int _run(const _Op *op, _Args *args, SecureBuffer key,
              SecureBuffer sink=None, SecureBuffer state=None, SecureBuffer sink2=None) except -1:
    # Borrow `key` for reading (None: the call takes no key), and `sink` /
    # `sink2` (buffers the secret results go to: args.out / args.out2) and
    # `state` (a secret state libsodium updates: args.state) for writing, for
    # exactly the length of the call; make it; release all of them whatever
    # happens.  Each borrow counts the call as a user of its buffer
    # (memory_lifetime.pxi): destroy() of a key in use waits for the call to
    # end to wipe it; wipe_all() does not wait, and a call that used a buffer
    # wiped meanwhile wipes what it produced and raises KeyDestroyedError.
    # Returns 0, or 1 when an _ANSWER call said "not authentic"; a failure
    # raises.
    cdef int rc = 0
    cdef bint without_gil = op.heavy or _large(args.mlen, args.adlen)
    cdef bint sink_borrowed = False
    cdef bint sink2_borrowed = False
    cdef bint state_borrowed = False
    cdef bint lost = False
    args.written = args.outlen
    if key is not None:
        args.keylen = key.nbytes()
        args.key = key.borrow_read()
    try:
        if sink is not None:
            args.out = sink.borrow_write()
            sink_borrowed = True
        if sink2 is not None:
            args.out2 = sink2.borrow_write()
            sink2_borrowed = True
        if state is not None:
            args.state = state.borrow_write()
            state_borrowed = True
        if without_gil:
            with nogil:
                rc = _call_and_wipe(op, args)
        else:
            rc = _call_and_wipe(op, args)
        # A buffer wiped under the call reads DESTROYED now (one destroyed
        # by destroy() while the call read it is wiped when it is released).
        lost = _wiped(key) or _wiped(sink) or _wiped(sink2) or _wiped(state)
        if lost:
            _wipe_output(args.out, args.outlen, sink)
            _wipe_output(args.out2, args.outlen, sink2)
    finally:
        if state_borrowed:
            args.state = NULL
            lost = _give_back(state, True) or lost
        if sink2_borrowed:
            args.out2 = NULL
            lost = _give_back(sink2, True) or lost
        if sink_borrowed:
            args.out = NULL
            lost = _give_back(sink, True) or lost
        if key is not None:
            args.key = NULL
            lost = _give_back(key, False) or lost
    if lost:
        name = op.name.decode("ascii")
        raise KeyDestroyedError(f"{name}(): a secure buffer it used was wiped while it ran "
                                f"(wipe_all() or KeyRing.destroy()); its result was wiped")
    if rc != 0:
        if op.failure == _ANSWER:
            return 1
        if op.failure == _REJECTED:
            name = op.name.decode("ascii")
            raise ValueError(f"{name}() rejected the peer's public key (a low-order point)")
        return sodium_failed(op.name, op.failure)
    if args.written != args.outlen:
        return sodium_failed(op.name, SODIUM_INTERNAL)
    return 0


cdef inline bint _wiped(SecureBuffer buf) noexcept:
    return buf is not None and buf.protection() == SK_DESTROYED


cdef void _wipe_output(unsigned char *out, size_t n, SecureBuffer sink) noexcept:
    # A result made from a partly wiped buffer is wiped: a `bytes` the call
    # would have returned, or the caller's sink.  A sink that was itself
    # wiped is revoked, and zeroed again by its own release.
    if out != NULL and n != 0 and not _wiped(sink):
        sodium.sodium_memzero(out, n)


cdef bint _give_back(SecureBuffer buf, bint write) except? True:
    # End a borrow; True when the buffer was wiped under it.
    try:
        if write:
            buf.release_write()
        else:
            buf.release_read()
    except KeyDestroyedError:
        return True
    return False


cdef SecureBuffer _run_into_new(const _Op *op, _Args *args, SecureBuffer key, SecureBuffer result,
                                SecureBuffer second=None, SecureBuffer state=None):
    # A secret result: libsodium writes it straight into `result` (new,
    # READWRITE, unborrowed; `second`, the same size, when the call has two:
    # args.out2), borrowed for writing like any sink, then sealed READONLY.
    # On any failure the results are destroyed, so that nothing is left
    # behind.  `state`: as for _run.
    try:
        args.outlen = result.nbytes()
        _run(op, args, key, result, state, second)
        result.seal()
        if second is not None:
            second.seal()
    except BaseException:
        result.destroy()
        if second is not None:
            second.destroy()
        raise
    return result


cdef tuple _keypair(const _Op *random_op, const _Op *seeded_op, object seed, size_t seed_len,
                    size_t public_len, size_t secret_len):
    # A key pair (public bytes, secret SecureKey generated in guarded
    # memory): random, or from `seed`, a SecureBuffer of seed_len bytes.
    cdef SecureBuffer s = None
    cdef const _Op *op = random_op
    if seed is not None:
        s = _secure_arg(seed, "seed", seed_len)
        op = seeded_op
    public = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>public_len)
    cdef _Args a = _NO_ARGS
    a.pk_out = <unsigned char *>PyBytes_AS_STRING(public)
    try:
        secret = _run_into_new(op, &a, s, SecureKey(secret_len))
    except BaseException:
        # A public half made from a seed wiped mid-call is dropped zeroed.
        sodium.sodium_memzero(a.pk_out, public_len)
        raise
    return public, secret
