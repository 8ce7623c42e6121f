# Signatures (included by crypto.pyx): Ed25519, a 32-byte public key, a
# 64-byte secret key (seed + public key) and 64-byte detached signatures.

SIGN_SEED_BYTES = sodium.crypto_sign_SEEDBYTES
SIGN_PUBLIC_KEY_BYTES = sodium.crypto_sign_PUBLICKEYBYTES
SIGN_SECRET_KEY_BYTES = sodium.crypto_sign_SECRETKEYBYTES
SIGNATURE_BYTES = sodium.crypto_sign_BYTES

# The functional form, so that the field types are the real classes
# (typing.get_type_hints works; SecureKey is only cimported here).
SigningKeyPair = NamedTuple("SigningKeyPair", [("public", bytes), ("secret", SecureKey)])
SigningKeyPair.__module__ = __name__
SigningKeyPair.__doc__ = """An Ed25519 key pair: `public` (32 bytes) and `secret` (64-byte SecureKey).

``securekeys.destroy_key(pair)`` destroys the secret key.
"""


cdef int _keypair_call(_Args *a) noexcept nogil:
    return sodium.crypto_sign_keypair(a.pk_out, a.out)


cdef int _seed_keypair_call(_Args *a) noexcept nogil:
    return sodium.crypto_sign_seed_keypair(a.pk_out, a.out, a.key)


cdef int _sign_call(_Args *a) noexcept nogil:
    return sodium.crypto_sign_detached(a.out, &a.written, a.m, a.mlen, a.key)


cdef int _verify_call(_Args *a) noexcept nogil:
    return sodium.crypto_sign_verify_detached(a.tag, a.m, a.mlen, a.pk)


# Always without the GIL: a scalar multiplication costs far more than
# handing the GIL over.
cdef _Op _KEYPAIR = _Op(call=_keypair_call, name=b"crypto_sign_keypair",
                        failure=SODIUM_INTERNAL, heavy=True, stack=_STACK_SMALL)
cdef _Op _SEED_KEYPAIR = _Op(call=_seed_keypair_call, name=b"crypto_sign_seed_keypair",
                             failure=SODIUM_INTERNAL, heavy=True, stack=_STACK_SMALL)
cdef _Op _SIGN = _Op(call=_sign_call, name=b"crypto_sign_detached",
                     failure=SODIUM_INTERNAL, heavy=True, stack=_STACK_SMALL)
cdef _Op _VERIFY = _Op(call=_verify_call, name=b"crypto_sign_verify_detached",
                       failure=_ANSWER, heavy=True, stack=_STACK_PUBLIC)


def signing_keypair(seed=None):
    """A new Ed25519 key pair; the secret key is generated in guarded memory.

    With `seed` (a 32-byte SecureBuffer) the pair is deterministic, as
    crypto_sign_seed_keypair; without it, random.  The secret is READONLY.
    """
    return SigningKeyPair(*_keypair(&_KEYPAIR, &_SEED_KEYPAIR, seed, sodium.crypto_sign_SEEDBYTES,
                                    sodium.crypto_sign_PUBLICKEYBYTES, sodium.crypto_sign_SECRETKEYBYTES))


cdef int sign_into(SecureBuffer secret, unsigned char *sig,
                   const unsigned char *m, size_t mlen) except -1:
    _secure_arg(secret, "secret", sodium.crypto_sign_SECRETKEYBYTES)
    _need(sig, 1, "sig")
    _need(m, mlen, "m")
    cdef _Args a = _NO_ARGS
    a.m = m
    a.mlen = mlen
    a.out = sig
    a.outlen = sodium.crypto_sign_BYTES
    return _run(&_SIGN, &a, secret)


def sign(secret, message):
    """The 64-byte detached Ed25519 signature of `message` by `secret` (64 bytes).

    Ed25519 reads the message twice (for the nonce, then the challenge): a
    message that is not ``bytes`` is copied first, as two messages under one
    nonce would give away the secret key.  A SecureBuffer, or a memoryview
    or slice of one (``with buf.reading() as view: sign(secret, view)``), is
    copied into guarded memory; any other copy is wiped after the call.
    """
    cdef SecureBuffer sk = _secure_arg(secret, "secret", sodium.crypto_sign_SECRETKEYBYTES)
    cdef _In m = _NO_INPUT
    try:
        _input(message, &m, "message", _READ_TWICE)
        result = PyBytes_FromStringAndSize(NULL, sodium.crypto_sign_BYTES)
        sign_into(sk, <unsigned char *>PyBytes_AS_STRING(result), m.ptr, <size_t>m.len)
    finally:
        _release(&m)
    return result


def verify(public, message, signature):
    """True when `signature` (64 bytes) is a valid Ed25519 signature of
    `message` under `public` (32 bytes, bytes-like).

    The signature and public key are read twice by libsodium: unless they
    are ``bytes`` they are copied first (96 bytes), so that a signature
    changing during the call cannot be accepted.  True says the bytes read
    were authentic: verify a message nobody changes afterwards.
    """
    cdef _In pk = _NO_INPUT
    cdef _In m = _NO_INPUT
    cdef _In sig = _NO_INPUT
    cdef _Args a = _NO_ARGS
    cdef unsigned char pk_room[_ROOM]
    cdef unsigned char sig_room[_ROOM]
    try:
        _input_fixed(public, &pk, "public", sodium.crypto_sign_PUBLICKEYBYTES, _READ_TWICE, pk_room)
        _input_fixed(signature, &sig, "signature", sodium.crypto_sign_BYTES, _READ_TWICE, sig_room)
        _input(message, &m, "message", _READ_ONCE)
        a.pk = pk.ptr
        a.tag = sig.ptr
        a.m = m.ptr
        a.mlen = <size_t>m.len
        return _run(&_VERIFY, &a, None) == 0
    finally:
        _release(&pk)
        _release(&m)
        _release(&sig)
