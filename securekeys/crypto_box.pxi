# Sealed boxes (included by crypto.pyx): crypto_box_seal, anonymous
# encryption to an X25519 public key.  Anyone holding the public key can
# seal; only the key pair's secret opens.  The sealed form is
# ephemeral public key (32) || XSalsa20-Poly1305 box (message + 16).

BOX_PUBLIC_KEY_BYTES = sodium.crypto_box_PUBLICKEYBYTES
BOX_SECRET_KEY_BYTES = sodium.crypto_box_SECRETKEYBYTES
BOX_SEED_BYTES = sodium.crypto_box_SEEDBYTES
BOX_SEAL_BYTES = sodium.crypto_box_SEALBYTES

BoxKeyPair = NamedTuple("BoxKeyPair", [("public", bytes), ("secret", SecureKey)])
BoxKeyPair.__module__ = __name__
BoxKeyPair.__doc__ = """An X25519 box pair: `public` (32 bytes) and `secret` (32-byte SecureKey).

``securekeys.destroy_key(pair)`` destroys the secret key.
"""


cdef int _box_keypair_call(_Args *a) noexcept nogil:
    return sodium.crypto_box_keypair(a.pk_out, a.out)


cdef int _box_seed_keypair_call(_Args *a) noexcept nogil:
    return sodium.crypto_box_seed_keypair(a.pk_out, a.out, a.key)


cdef int _box_seal_call(_Args *a) noexcept nogil:
    return sodium.crypto_box_seal(a.out, a.m, a.mlen, a.pk)


cdef int _box_seal_open_call(_Args *a) noexcept nogil:
    return sodium.crypto_box_seal_open(a.out, a.m, a.mlen, a.pk, a.key)


# Scalar multiplications: always without the GIL.  box_seal takes no key
# of ours, but its ephemeral secret key and the shared key are on the stack.
cdef _Op _BOX_KEYPAIR = _Op(call=_box_keypair_call, name=b"crypto_box_keypair",
                            failure=SODIUM_INTERNAL, heavy=True, stack=_STACK_SMALL)
cdef _Op _BOX_SEED_KEYPAIR = _Op(call=_box_seed_keypair_call, name=b"crypto_box_seed_keypair",
                                 failure=SODIUM_INTERNAL, heavy=True, stack=_STACK_SMALL)
cdef _Op _BOX_SEAL = _Op(call=_box_seal_call, name=b"crypto_box_seal",
                         failure=_REJECTED, heavy=True, stack=_STACK_SMALL)
cdef _Op _BOX_SEAL_OPEN = _Op(call=_box_seal_open_call, name=b"crypto_box_seal_open",
                              failure=SODIUM_FORGED, heavy=True, stack=_STACK_SMALL)


def box_keypair(seed=None):
    """A new box key pair; the secret key is generated in guarded memory.

    With `seed` (a 32-byte SecureBuffer) the pair is deterministic, as
    crypto_box_seed_keypair; without it, random.  The secret is READONLY.
    """
    return BoxKeyPair(*_keypair(&_BOX_KEYPAIR, &_BOX_SEED_KEYPAIR, seed, sodium.crypto_box_SEEDBYTES,
                                sodium.crypto_box_PUBLICKEYBYTES, sodium.crypto_box_SECRETKEYBYTES))


def box_seal(public, message):
    """Encrypt `message` to the holder of `public` (32 bytes): bytes of
    ``len(message) + 48``.  Anonymous: the sender needs no key pair and the
    recipient learns nothing of who sealed it.  A public key libsodium
    rejects (a low-order point) is a ValueError.
    """
    cdef _In pk = _NO_INPUT
    cdef _In m = _NO_INPUT
    cdef _Args a = _NO_ARGS
    cdef unsigned char pk_room[_ROOM]
    try:
        # Read twice (the nonce, then the shared key): held still.
        _input_fixed(public, &pk, "public", sodium.crypto_box_PUBLICKEYBYTES, _READ_TWICE, pk_room)
        _input(message, &m, "message", _READ_ONCE)
        if <size_t>m.len > sodium.crypto_box_MESSAGEBYTES_MAX - sodium.crypto_box_SEALBYTES:
            raise ValueError("message is too long")
        result = PyBytes_FromStringAndSize(NULL, m.len + <Py_ssize_t>sodium.crypto_box_SEALBYTES)
        a.pk = pk.ptr
        a.m = m.ptr
        a.mlen = <size_t>m.len
        a.out = <unsigned char *>PyBytes_AS_STRING(result)
        _run(&_BOX_SEAL, &a, None)
    finally:
        _release(&pk)
        _release(&m)
    return result


def box_seal_open(pair, sealed):
    """Open what `box_seal` sealed to `pair.public`, into a new READONLY
    SecureBuffer.

    Forged, corrupted, truncated (shorter than 48 bytes) or sealed to
    another key: `DecryptionError`.  An authentic empty message is a plain
    ValueError (a SecureBuffer cannot be empty).  `sealed` is copied first
    unless it is ``bytes`` (libsodium reads it twice).
    """
    if not isinstance(pair, BoxKeyPair):
        raise TypeError(f"pair must be a BoxKeyPair, not {type(pair).__name__}")
    cdef SecureBuffer secret = _secure_arg(pair.secret, "secret", sodium.crypto_box_SECRETKEYBYTES)
    cdef _In pk = _NO_INPUT
    cdef _In c = _NO_INPUT
    cdef _Args a = _NO_ARGS
    try:
        # Our public key is hashed once, into the nonce; the sender's (in
        # `sealed`) is hashed, then multiplied by.
        _input_fixed(pair.public, &pk, "public", sodium.crypto_box_PUBLICKEYBYTES, _READ_ONCE, NULL)
        _input(sealed, &c, "sealed", _READ_TWICE)
        if <size_t>c.len < sodium.crypto_box_SEALBYTES:
            raise DecryptionError(f"sealed box must be at least {sodium.crypto_box_SEALBYTES} "
                                  f"bytes long, not {c.len}")
        a.pk = pk.ptr
        a.m = c.ptr
        a.mlen = <size_t>c.len
        if <size_t>c.len == sodium.crypto_box_SEALBYTES:
            _run(&_BOX_SEAL_OPEN, &a, secret)     # out NULL: the tag alone is checked
            raise ValueError("nothing to decrypt: the sealed box is authentic but "
                             "its plaintext is empty (a SecureBuffer cannot be empty)")
        return _run_into_new(&_BOX_SEAL_OPEN, &a, secret,
                             SecureBuffer(<size_t>c.len - sodium.crypto_box_SEALBYTES))
    finally:
        _release(&pk)
        _release(&c)
