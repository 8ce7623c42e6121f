# Simple authenticated encryption (included by crypto.pyx): the AEAD with a
# fresh random nonce carried in front, so that no caller frames nonces by
# hand.  The format is  nonce (24) || ciphertext || tag (16):  any libsodium
# user splits off the first 24 bytes and calls
# crypto_aead_xchacha20poly1305_ietf_decrypt on the rest.

ENCRYPT_OVERHEAD_BYTES = (sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
                          + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES)


cdef inline size_t _sealed_min() noexcept nogil:
    return sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES


cdef int _check_sealed(size_t sealed_len) except -1:
    # Shorter than a nonce and a tag: truncated, never an authentic message.
    if sealed_len < _sealed_min():
        raise DecryptionError(f"sealed message must be at least {_sealed_min()} bytes long "
                              f"(nonce and tag), not {sealed_len}")
    return 0


cdef int encrypt_into(SecureBuffer key, unsigned char *out,
                      const unsigned char *m, size_t mlen,
                      const unsigned char *ad, size_t adlen) except -1:
    _need(out, 1, "out")
    # The nonce is public: 24 random bytes straight into the output.
    sodium.randombytes_buf(out, sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    return aead_encrypt_into(key, out + sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                             m, mlen, ad, adlen, out)


cdef SecureBuffer decrypt_from(SecureBuffer key, const unsigned char *sealed, size_t sealed_len,
                               const unsigned char *ad, size_t adlen):
    _need(sealed, sealed_len, "sealed")
    _check_sealed(sealed_len)
    cdef size_t n = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
    return aead_decrypt_from(key, sealed + n, sealed_len - n, ad, adlen, sealed)


cdef Py_ssize_t decrypt_to(SecureBuffer key, SecureBuffer out,
                           const unsigned char *sealed, size_t sealed_len,
                           const unsigned char *ad, size_t adlen) except -1:
    _need(sealed, sealed_len, "sealed")
    _check_sealed(sealed_len)
    cdef size_t n = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
    return aead_decrypt_to(key, out, sealed + n, sealed_len - n, ad, adlen, sealed)


def encrypt(key, message, aad=b""):
    """Encrypt and authenticate `message` under a 32-byte key with a fresh
    random nonce: ``nonce (24) || ciphertext || tag (16)`` as bytes.

    XChaCha20-Poly1305-IETF: a random 24-byte nonce is safe for any number
    of messages under one key.  `aad` is authenticated, not encrypted, and
    must be given again to decrypt.
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    cdef _In m = _NO_INPUT
    cdef _In ad = _NO_INPUT
    try:
        _input(message, &m, "message", _READ_ONCE)
        _input_or_none(aad, &ad, "aad", _READ_ONCE)
        if m.len > PY_SSIZE_T_MAX - <Py_ssize_t>_sealed_min():
            raise ValueError("message is too long")
        result = PyBytes_FromStringAndSize(NULL, m.len + <Py_ssize_t>_sealed_min())
        encrypt_into(k, <unsigned char *>PyBytes_AS_STRING(result), m.ptr, <size_t>m.len,
                     ad.ptr, <size_t>ad.len)
    finally:
        _release(&m)
        _release(&ad)
    return result


def decrypt(key, sealed, aad=b""):
    """Authenticate and decrypt what `encrypt` returned, into a new READONLY
    SecureBuffer.

    Forged, truncated (shorter than 40 bytes) or wrong-key input raises
    `DecryptionError`; an authentic empty message a plain `ValueError` (a
    SecureBuffer cannot be empty).  `sealed` is copied first unless it is
    ``bytes`` (libsodium reads it twice).
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    cdef _In s = _NO_INPUT
    cdef _In ad = _NO_INPUT
    try:
        _input(sealed, &s, "sealed", _READ_TWICE)
        _input_or_none(aad, &ad, "aad", _READ_ONCE)
        return decrypt_from(k, s.ptr, <size_t>s.len, ad.ptr, <size_t>ad.len)
    finally:
        _release(&s)
        _release(&ad)


def decrypt_into(key, sealed, out, aad=b""):
    """`decrypt` into `out`, a writable SecureBuffer reused across messages;
    returns the plaintext's length (0 for an authentic empty message).

    `out` too small is a ValueError, forged input `DecryptionError`; in both
    cases `out` is left exactly as it was.  `sealed` and `aad` are read twice
    (the tag check, then the decryption): copied first unless ``bytes``.
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    cdef SecureBuffer o = _secure_arg(out, "out", 0)
    cdef _In s = _NO_INPUT
    cdef _In ad = _NO_INPUT
    try:
        _input(sealed, &s, "sealed", _READ_TWICE)
        _input_or_none(aad, &ad, "aad", _READ_TWICE)     # the tag check, then the decryption
        return decrypt_to(k, o, s.ptr, <size_t>s.len, ad.ptr, <size_t>ad.len)
    finally:
        _release(&s)
        _release(&ad)
