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

cdef _Args _NO_ARGS              # all zero: C zero-initialises statics


# A libsodium call: 0 on success, as libsodium itself returns.
ctypedef int (*_Call)(_Args *args) noexcept nogil

cdef enum:
    # _Op.failure beyond _checks' SODIUM_*: a non-zero return is the answer
    # "not authentic" (a verify), not an error.
    _ANSWER = -1
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


# Zeroing the dead frames is not enough: libsodium also returns with key
# words, keystream and hash state in the registers a callee may clobber
# (x86-64: rax, rcx, rdx, rsi, rdi, r8-r11 and every vector register), and
# the next code to spill them (a variadic function's register save area, the
# dynamic linker's lazy binding, which saves every vector register with
# xsave) writes them to the stack above the zeroed area.  The scan of
# tests/test_crypto_stack.py found the master key that way after
# derive_key().  So the runner also zeroes those registers.  x86-64 only;
# elsewhere only the stack is zeroed (see the README).
cdef extern from *:
    """
    static void securekeys_clear_registers(int has_avx, int has_avx512f)
    {
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        __asm__ __volatile__(
            "xorl %%eax, %%eax\\n\\t" "xorl %%ecx, %%ecx\\n\\t" "xorl %%edx, %%edx\\n\\t"
            "xorl %%esi, %%esi\\n\\t" "xorl %%edi, %%edi\\n\\t" "xorl %%r8d, %%r8d\\n\\t"
            "xorl %%r9d, %%r9d\\n\\t" "xorl %%r10d, %%r10d\\n\\t" "xorl %%r11d, %%r11d"
            ::: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "cc");
        if (has_avx) {
            /* All of ymm0-15 (zmm0-15 with AVX-512). */
            __asm__ __volatile__("vzeroall" ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
                                 "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
                                 "xmm13", "xmm14", "xmm15");
        } else {
            __asm__ __volatile__(
                "pxor %%xmm0, %%xmm0\\n\\t" "pxor %%xmm1, %%xmm1\\n\\t" "pxor %%xmm2, %%xmm2\\n\\t"
                "pxor %%xmm3, %%xmm3\\n\\t" "pxor %%xmm4, %%xmm4\\n\\t" "pxor %%xmm5, %%xmm5\\n\\t"
                "pxor %%xmm6, %%xmm6\\n\\t" "pxor %%xmm7, %%xmm7\\n\\t" "pxor %%xmm8, %%xmm8\\n\\t"
                "pxor %%xmm9, %%xmm9\\n\\t" "pxor %%xmm10, %%xmm10\\n\\t" "pxor %%xmm11, %%xmm11\\n\\t"
                "pxor %%xmm12, %%xmm12\\n\\t" "pxor %%xmm13, %%xmm13\\n\\t" "pxor %%xmm14, %%xmm14\\n\\t"
                "pxor %%xmm15, %%xmm15"
                ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
        }
        if (has_avx512f) {
            /* zmm16-31 exist only with AVX-512; the compiler does not use
               them here, so they need no clobber. */
            __asm__ __volatile__(
                "vpxord %%zmm16, %%zmm16, %%zmm16\\n\\t" "vpxord %%zmm17, %%zmm17, %%zmm17\\n\\t"
                "vpxord %%zmm18, %%zmm18, %%zmm18\\n\\t" "vpxord %%zmm19, %%zmm19, %%zmm19\\n\\t"
                "vpxord %%zmm20, %%zmm20, %%zmm20\\n\\t" "vpxord %%zmm21, %%zmm21, %%zmm21\\n\\t"
                "vpxord %%zmm22, %%zmm22, %%zmm22\\n\\t" "vpxord %%zmm23, %%zmm23, %%zmm23\\n\\t"
                "vpxord %%zmm24, %%zmm24, %%zmm24\\n\\t" "vpxord %%zmm25, %%zmm25, %%zmm25\\n\\t"
                "vpxord %%zmm26, %%zmm26, %%zmm26\\n\\t" "vpxord %%zmm27, %%zmm27, %%zmm27\\n\\t"
                "vpxord %%zmm28, %%zmm28, %%zmm28\\n\\t" "vpxord %%zmm29, %%zmm29, %%zmm29\\n\\t"
                "vpxord %%zmm30, %%zmm30, %%zmm30\\n\\t" "vpxord %%zmm31, %%zmm31, %%zmm31" ::: "memory");
        }
    #else
        (void) has_avx;
        (void) has_avx512f;
    #endif
    }
    """
    void securekeys_clear_registers(int has_avx, int has_avx512f) nogil

# What libsodium found at sodium_init() (which _memory ran at import).
cdef int _HAS_AVX = sodium.sodium_runtime_has_avx()
cdef int _HAS_AVX512F = sodium.sodium_runtime_has_avx512f()


cdef int _call_and_wipe(const _Op *op, _Args *args) noexcept nogil:
    # The call, then its dead frames and the registers it may have left
    # secrets in zeroed, on the thread that made it and before anything else
    # runs there: no copy of a key, a plaintext or a derived secret outlives
    # the call on the stack (nor reaches a core file).
    cdef int rc = op.call(args)
    if op.stack != 0:
        sodium.sodium_stackzero(op.stack)
        securekeys_clear_registers(_HAS_AVX, _HAS_AVX512F)
    return rc


cdef int _run(const _Op *op, _Args *args, SecureBuffer key) except -1:
    # Borrow `key` (None: the call takes no key) for exactly the length of
    # the call, make it, release the key whatever happens.  Returns 0, or 1
    # when an _ANSWER call said "not authentic"; a failure raises.
    cdef int rc
    cdef bint without_gil = op.heavy or _large(args.mlen, args.adlen)
    args.written = args.outlen
    if key is not None:
        args.keylen = key.nbytes()
        args.key = key.borrow_read()
    try:
        if without_gil:
            with nogil:
                rc = _call_and_wipe(op, args)
        else:
            rc = _call_and_wipe(op, args)
    finally:
        if key is not None:
            args.key = NULL
            key.release_read()
    if rc != 0:
        if op.failure == _ANSWER:
            return 1
        return sodium_failed(op.name, op.failure)
    if args.written != args.outlen:
        return sodium_failed(op.name, SODIUM_INTERNAL)
    return 0


cdef SecureBuffer _run_into_new(const _Op *op, _Args *args, SecureBuffer key, SecureBuffer result):
    # A secret result: libsodium writes it straight into `result` (new,
    # READWRITE, unborrowed), which is then sealed READONLY.  On any failure
    # the result is destroyed, so that nothing is left behind.
    try:
        args.out = result.fill_ptr()
        args.outlen = result.nbytes()
        _run(op, args, key)
        result.seal()
    except BaseException:
        result.destroy()
        raise
    return result
