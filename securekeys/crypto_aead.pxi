# AEAD (included by crypto.pyx): XChaCha20-Poly1305-IETF, a 32-byte key and
# a 24-byte random nonce; ciphertext and a 16-byte tag.

AEAD_KEY_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
AEAD_NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
AEAD_TAG_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES


cdef int _aead_encrypt_call(_Args *a) noexcept nogil:
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        a.out, &a.written, a.m, a.mlen, a.ad, a.adlen, NULL, a.nonce, a.key)


cdef int _aead_decrypt_call(_Args *a) noexcept nogil:
    # With out == NULL (empty plaintext) libsodium only checks the tag.
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        a.out, &a.written, NULL, a.m, a.mlen, a.ad, a.adlen, a.nonce, a.key)


cdef int _aead_check_then_decrypt_call(_Args *a) noexcept nogil:
    # On a wrong tag libsodium zeroes `m` before it returns.  A caller's
    # reused `out` must be left exactly as it was by a forged message, so the
    # tag is checked alone first (out == NULL) and only an authentic
    # ciphertext is decrypted.  The second pass costs one Poly1305 more.
    cdef int rc = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        NULL, NULL, NULL, a.m, a.mlen, a.ad, a.adlen, a.nonce, a.key)
    if rc != 0:
        return rc
    return _aead_decrypt_call(a)


cdef _Op _AEAD_ENCRYPT = _Op(call=_aead_encrypt_call, name=b"crypto_aead_xchacha20poly1305_ietf_encrypt",
                             failure=SODIUM_INTERNAL, heavy=False, stack=_STACK_SMALL)
cdef _Op _AEAD_DECRYPT = _Op(call=_aead_decrypt_call, name=b"crypto_aead_xchacha20poly1305_ietf_decrypt",
                             failure=SODIUM_FORGED, heavy=False, stack=_STACK_SMALL)
cdef _Op _AEAD_DECRYPT_INTO = _Op(call=_aead_check_then_decrypt_call,
                                  name=b"crypto_aead_xchacha20poly1305_ietf_decrypt",
                                  failure=SODIUM_FORGED, heavy=False, stack=_STACK_SMALL)


cdef inline int _aead_encrypt(SecureBuffer key, unsigned char *out,
                              const unsigned char *m, size_t mlen,
                              const unsigned char *ad, size_t adlen,
                              const unsigned char *nonce) except -1:
    # The call, once its arguments are checked.
    cdef _Args a = _NO_ARGS
    a.m = m
    a.mlen = mlen
    a.ad = ad
    a.adlen = adlen
    a.nonce = nonce
    a.out = out
    a.outlen = mlen + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
    return _run(&_AEAD_ENCRYPT, &a, key)


cdef int aead_encrypt_into(SecureBuffer key, unsigned char *out,
                           const unsigned char *m, size_t mlen,
                           const unsigned char *ad, size_t adlen,
                           const unsigned char *nonce) except -1:
    _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    _need(out, 1, "out")
    _need(nonce, 1, "nonce")
    _need(m, mlen, "m")
    _need(ad, adlen, "ad")
    if mlen > sodium.crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX:
        raise ValueError("plaintext is too long")
    return _aead_encrypt(key, out, m, mlen, ad, adlen, nonce)


cdef size_t _aead_plaintext_len(SecureBuffer key, const unsigned char *c, size_t clen,
                                const unsigned char *ad, size_t adlen,
                                const unsigned char *nonce) except? 0:
    # The checks shared by the decrypt functions; the plaintext's length.
    _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    _need(nonce, 1, "nonce")
    _need(c, clen, "c")
    _need(ad, adlen, "ad")
    if clen < sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES:
        raise DecryptionError(
            f"ciphertext must be at least "
            f"{sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES} bytes long "
            f"(the tag), not {clen}")
    return clen - sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES


cdef inline _Args _aead_decrypt_args(const unsigned char *c, size_t clen,
                                     const unsigned char *ad, size_t adlen,
                                     const unsigned char *nonce) noexcept:
    cdef _Args a = _NO_ARGS
    a.m = c
    a.mlen = clen
    a.ad = ad
    a.adlen = adlen
    a.nonce = nonce
    return a


cdef SecureBuffer aead_decrypt_from(SecureBuffer key,
                                    const unsigned char *c, size_t clen,
                                    const unsigned char *ad, size_t adlen,
                                    const unsigned char *nonce):
    cdef size_t expected = _aead_plaintext_len(key, c, clen, ad, adlen, nonce)
    cdef _Args a = _aead_decrypt_args(c, clen, ad, adlen, nonce)
    if expected == 0:
        _run(&_AEAD_DECRYPT, &a, key)     # the tag is checked first: forged is DecryptionError
        raise ValueError("nothing to decrypt: the ciphertext is authentic but "
                         "its plaintext is empty (a SecureBuffer cannot be empty)")
    return _run_into_new(&_AEAD_DECRYPT, &a, key, SecureBuffer(expected))


cdef Py_ssize_t aead_decrypt_to(SecureBuffer key, SecureBuffer out,
                                const unsigned char *c, size_t clen,
                                const unsigned char *ad, size_t adlen,
                                const unsigned char *nonce) except -1:
    cdef size_t expected = _aead_plaintext_len(key, c, clen, ad, adlen, nonce)
    cdef SecureBuffer sink = _sink_arg(out, key, expected)
    cdef _Args a = _aead_decrypt_args(c, clen, ad, adlen, nonce)
    if expected == 0:
        _run(&_AEAD_DECRYPT, &a, key)     # only the tag: out is not touched
        return 0
    a.outlen = expected
    _run(&_AEAD_DECRYPT_INTO, &a, key, sink)
    return <Py_ssize_t>expected


def aead_encrypt(key, plaintext, nonce, aad=None):
    """Encrypt and authenticate `plaintext` (and authenticate `aad`).

    XChaCha20-Poly1305-IETF with a 32-byte key and a 24-byte nonce; returns
    ciphertext + 16-byte tag as bytes.  An empty plaintext is allowed (the
    result is just the tag).  `aad=None` is the same as ``aad=b""``.
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    cdef _In m = _NO_INPUT
    cdef _In n = _NO_INPUT
    cdef _In ad = _NO_INPUT
    try:
        _input_fixed(nonce, &n, "nonce", sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, _READ_ONCE, NULL)
        _input(plaintext, &m, "plaintext", _READ_ONCE)
        _input_or_none(aad, &ad, "aad", _READ_ONCE)
        if (m.len > PY_SSIZE_T_MAX - <Py_ssize_t>sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
                or <size_t>m.len > sodium.crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX):
            raise ValueError("plaintext is too long")
        result = PyBytes_FromStringAndSize(NULL, m.len + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES)
        _aead_encrypt(k, <unsigned char *>PyBytes_AS_STRING(result), m.ptr, <size_t>m.len,
                      ad.ptr, <size_t>ad.len, n.ptr)
    finally:
        _release(&m)
        _release(&n)
        _release(&ad)
    return result


def aead_decrypt(key, ciphertext, nonce, aad=None):
    """Authenticate and decrypt `ciphertext` into a new READONLY SecureBuffer.

    The plaintext is written by libsodium straight into guarded memory.  A
    forged or corrupted ciphertext, nonce or AAD, a wrong key, or a ciphertext
    shorter than the 16-byte tag raise `DecryptionError` (a ValueError) and
    leave no plaintext behind.

    A SecureBuffer cannot be empty: a ciphertext that authenticates but holds
    an empty plaintext raises a plain `ValueError` ("nothing to decrypt"),
    after the tag has been checked (a forged one is still DecryptionError).

    libsodium checks the tag in one pass and decrypts in a second: a
    ciphertext that is not ``bytes`` (a bytearray, an mmap, a SecureBuffer)
    is copied first, so that bytes changing during the call can only make
    it fail, never return a plaintext the sender did not write.
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    cdef _In c = _NO_INPUT
    cdef _In n = _NO_INPUT
    cdef _In ad = _NO_INPUT
    try:
        _input_fixed(nonce, &n, "nonce", sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, _READ_ONCE, NULL)
        _input(ciphertext, &c, "ciphertext", _READ_TWICE)
        _input_or_none(aad, &ad, "aad", _READ_ONCE)
        return aead_decrypt_from(k, c.ptr, <size_t>c.len, ad.ptr, <size_t>ad.len, n.ptr)
    finally:
        _release(&c)
        _release(&n)
        _release(&ad)


def aead_decrypt_into(key, ciphertext, nonce, out, aad=None):
    """Authenticate and decrypt `ciphertext` into `out`; the plaintext's length.

    `out` is a writable SecureBuffer (not a SecureKey), reused across
    messages: no allocation per message.  It is borrowed for writing during
    the call, so a NOACCESS `out` is NOACCESS again afterwards.  Its first
    ``len(ciphertext) - 16`` bytes receive the plaintext; the rest is left
    as it was.  `out` too small is a ValueError; a forged message is a
    `DecryptionError`: in both cases `out` is left exactly as it was.  An
    authentic empty plaintext returns 0.

    The tag is checked first, then the plaintext decrypted: the ciphertext,
    nonce and AAD are read twice, so unless they are ``bytes`` they are
    copied first (a nonce onto the stack).
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    cdef SecureBuffer o = _secure_arg(out, "out", 0)
    cdef _In c = _NO_INPUT
    cdef _In n = _NO_INPUT
    cdef _In ad = _NO_INPUT
    cdef unsigned char nonce_room[_ROOM]
    try:
        # All three read twice: the tag is checked, then the plaintext
        # decrypted (_aead_check_then_decrypt_call).
        _input_fixed(nonce, &n, "nonce", sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, _READ_TWICE,
                     nonce_room)
        _input(ciphertext, &c, "ciphertext", _READ_TWICE)
        _input_or_none(aad, &ad, "aad", _READ_TWICE)
        return aead_decrypt_to(k, o, c.ptr, <size_t>c.len, ad.ptr, <size_t>ad.len, n.ptr)
    finally:
        _release(&c)
        _release(&n)
        _release(&ad)


def _aead_decrypt_key(key, ciphertext, nonce, aad, result):
    """aead_decrypt straight into `result`, a new READWRITE SecureKey of
    exactly ``len(ciphertext) - 16`` bytes, which is then sealed READONLY:
    how files.read_key opens an encrypted key file.  The same checks and
    errors as aead_decrypt; on any of them `result` is destroyed."""
    if type(result) is not SecureKey:
        raise TypeError(f"result must be a new SecureKey, not {type(result).__name__}")
    cdef SecureBuffer k
    cdef SecureBuffer r = result
    cdef _In c = _NO_INPUT
    cdef _In n = _NO_INPUT
    cdef _In ad = _NO_INPUT
    cdef _Args a
    try:
        k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
        _input_fixed(nonce, &n, "nonce", sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, _READ_ONCE, NULL)
        _input(ciphertext, &c, "ciphertext", _READ_TWICE)
        _input_or_none(aad, &ad, "aad", _READ_ONCE)
        if _aead_plaintext_len(k, c.ptr, <size_t>c.len, ad.ptr, <size_t>ad.len, n.ptr) != r.nbytes():
            raise ValueError(f"the ciphertext holds {c.len - <Py_ssize_t>AEAD_TAG_BYTES} bytes, "
                             f"the key has {r.nbytes()}")
        a = _aead_decrypt_args(c.ptr, <size_t>c.len, ad.ptr, <size_t>ad.len, n.ptr)
        _run_into_new(&_AEAD_DECRYPT, &a, k, r)
    except BaseException:
        r.destroy()
        raise
    finally:
        _release(&c)
        _release(&n)
        _release(&ad)
