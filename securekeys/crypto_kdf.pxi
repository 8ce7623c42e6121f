# Key derivation (included by crypto.pyx): crypto_kdf, subkey number N of a
# 32-byte master key under an 8-byte context (BLAKE2b).

KDF_KEY_BYTES = sodium.crypto_kdf_KEYBYTES
KDF_CONTEXT_BYTES = sodium.crypto_kdf_CONTEXTBYTES


cdef int _kdf_call(_Args *a) noexcept nogil:
    return sodium.crypto_kdf_derive_from_key(a.out, a.outlen, a.subkey_id,
                                             <const char *>a.context, a.key)


# Never worth releasing the GIL: a few BLAKE2b blocks.
cdef _Op _KDF = _Op(call=_kdf_call, name=b"crypto_kdf_derive_from_key",
                    failure=SODIUM_INTERNAL, heavy=False, stack=_STACK_SMALL)


cdef SecureKey derive_key_from(SecureBuffer master, unsigned long long subkey_id,
                               const unsigned char *context, size_t size):
    _secure_arg(master, "master", sodium.crypto_kdf_KEYBYTES)
    _need(context, 1, "context")
    _size_in(size, "size", sodium.crypto_kdf_BYTES_MIN, sodium.crypto_kdf_BYTES_MAX)
    cdef _Args a = _NO_ARGS
    a.subkey_id = subkey_id
    a.context = context
    # A new SecureKey is born READWRITE, so that libsodium can fill it.
    return <SecureKey>_run_into_new(&_KDF, &a, master, SecureKey(size))


def derive_key(master, subkey_id, context, size=32):
    """Derive subkey number `subkey_id` of `master` into a new READONLY SecureKey.

    `master` is a 32-byte SecureBuffer, `subkey_id` an int in [0, 2**64-1],
    `context` 8 bytes (bytes-like), `size` in [16, 64].
    """
    cdef SecureBuffer mk = _secure_arg(master, "master", sodium.crypto_kdf_KEYBYTES)
    cdef unsigned long long sub_id
    cdef size_t n = _int_in(size, "size", sodium.crypto_kdf_BYTES_MIN, sodium.crypto_kdf_BYTES_MAX)
    if isinstance(subkey_id, bool) or not isinstance(subkey_id, int):
        raise TypeError(f"subkey_id must be an int, not {type(subkey_id).__name__}")
    if not 0 <= subkey_id <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"subkey_id must be between 0 and 2**64-1, not {subkey_id}")
    sub_id = subkey_id
    cdef _In ctx = _NO_INPUT
    try:
        _input_fixed(context, &ctx, "context", sodium.crypto_kdf_CONTEXTBYTES, _READ_ONCE, NULL)   # one memcpy
        return derive_key_from(mk, sub_id, ctx.ptr, n)
    finally:
        _release(&ctx)
