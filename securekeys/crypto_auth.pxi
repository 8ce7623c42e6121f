# Authentication (included by crypto.pyx): crypto_auth (HMAC-SHA-512-256,
# 32-byte key and tag) and keyed BLAKE2b (crypto_generichash).

MAC_KEY_BYTES = sodium.crypto_auth_KEYBYTES
MAC_BYTES = sodium.crypto_auth_BYTES


cdef int _auth_call(_Args *a) noexcept nogil:
    return sodium.crypto_auth(a.out, a.m, a.mlen, a.key)


cdef int _auth_verify_call(_Args *a) noexcept nogil:
    return sodium.crypto_auth_verify(a.tag, a.m, a.mlen, a.key)


cdef int _generichash_call(_Args *a) noexcept nogil:
    return sodium.crypto_generichash(a.out, a.outlen, a.m, a.mlen, a.key, a.keylen)


cdef _Op _AUTH = _Op(call=_auth_call, name=b"crypto_auth",
                     failure=SODIUM_INTERNAL, heavy=False, stack=_STACK_SMALL)
cdef _Op _AUTH_VERIFY = _Op(call=_auth_verify_call, name=b"crypto_auth_verify",
                            failure=_ANSWER, heavy=False, stack=_STACK_SMALL)
cdef _Op _GENERICHASH = _Op(call=_generichash_call, name=b"crypto_generichash",
                            failure=SODIUM_INTERNAL, heavy=False, stack=_STACK_SMALL)


cdef inline int _hash_key_len(SecureBuffer key) except -1:
    # crypto_generichash takes keys of 16 to 64 bytes.
    cdef size_t klen = key.nbytes()
    if not sodium.crypto_generichash_KEYBYTES_MIN <= klen <= sodium.crypto_generichash_KEYBYTES_MAX:
        raise ValueError(f"key must be between {sodium.crypto_generichash_KEYBYTES_MIN} and "
                         f"{sodium.crypto_generichash_KEYBYTES_MAX} bytes long, not {klen}")
    return 0


cdef int mac_into(SecureBuffer key, unsigned char *out,
                  const unsigned char *m, size_t mlen) except -1:
    _secure_arg(key, "key", sodium.crypto_auth_KEYBYTES)
    _need(out, 1, "out")
    _need(m, mlen, "m")
    cdef _Args a = _NO_ARGS
    a.m = m
    a.mlen = mlen
    a.out = out
    a.outlen = sodium.crypto_auth_BYTES
    return _run(&_AUTH, &a, key)


cdef int mac_check(SecureBuffer key, const unsigned char *m, size_t mlen,
                   const unsigned char *tag) except -1:
    _secure_arg(key, "key", sodium.crypto_auth_KEYBYTES)
    _need(tag, 1, "tag")
    _need(m, mlen, "m")
    cdef _Args a = _NO_ARGS
    a.m = m
    a.mlen = mlen
    a.tag = tag
    return _run(&_AUTH_VERIFY, &a, key) == 0     # "not authentic" is an answer, not a failure


cdef int keyed_hash_into(SecureBuffer key, unsigned char *out, size_t outlen,
                         const unsigned char *m, size_t mlen) except -1:
    _secure_arg(key, "key", 0)
    _hash_key_len(key)
    _size_in(outlen, "outlen", sodium.crypto_generichash_BYTES_MIN,
             sodium.crypto_generichash_BYTES_MAX)
    _need(out, 1, "out")
    _need(m, mlen, "m")
    cdef _Args a = _NO_ARGS
    a.m = m
    a.mlen = mlen
    a.out = out
    a.outlen = outlen
    return _run(&_GENERICHASH, &a, key)


def mac(key, message):
    """The 32-byte HMAC-SHA-512-256 tag of `message` under a 32-byte key."""
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_auth_KEYBYTES)
    cdef _In m = _NO_INPUT
    try:
        _input(message, &m, "message", _READ_ONCE)
        result = PyBytes_FromStringAndSize(NULL, sodium.crypto_auth_BYTES)
        mac_into(k, <unsigned char *>PyBytes_AS_STRING(result), m.ptr, <size_t>m.len)
    finally:
        _release(&m)
    return result


def mac_verify(key, message, tag):
    """True when `tag` (32 bytes) is the crypto_auth tag of `message`.

    The comparison is constant-time (crypto_auth_verify).  True says the
    bytes read were authentic: verify a message nobody changes afterwards.
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_auth_KEYBYTES)
    cdef _In m = _NO_INPUT
    cdef _In t = _NO_INPUT
    cdef unsigned char tag_room[_ROOM]
    try:
        _input_fixed(tag, &t, "tag", sodium.crypto_auth_BYTES, _READ_TWICE, tag_room)
        _input(message, &m, "message", _READ_ONCE)
        return mac_check(k, m.ptr, <size_t>m.len, t.ptr) == 1
    finally:
        _release(&m)
        _release(&t)


def keyed_hash(key, message, size=32):
    """Keyed BLAKE2b (crypto_generichash) of `message`: `size` bytes, 16..64.

    The key is a SecureBuffer of 16 to 64 bytes.
    """
    cdef SecureBuffer k = _secure_arg(key, "key", 0)
    cdef size_t n = _int_in(size, "size", sodium.crypto_generichash_BYTES_MIN,
                            sodium.crypto_generichash_BYTES_MAX)
    _hash_key_len(k)
    cdef _In m = _NO_INPUT
    try:
        _input(message, &m, "message", _READ_ONCE)
        result = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
        keyed_hash_into(k, <unsigned char *>PyBytes_AS_STRING(result), n, m.ptr, <size_t>m.len)
    finally:
        _release(&m)
    return result
