# Key exchange (included by crypto.pyx): crypto_kx, X25519 then BLAKE2b-512
# of the shared point and both public keys, split into two 32-byte session
# keys: rx (to decrypt what the peer sends) and tx (to encrypt to it).

KX_PUBLIC_KEY_BYTES = sodium.crypto_kx_PUBLICKEYBYTES
KX_SECRET_KEY_BYTES = sodium.crypto_kx_SECRETKEYBYTES
KX_SEED_BYTES = sodium.crypto_kx_SEEDBYTES
KX_SESSION_KEY_BYTES = sodium.crypto_kx_SESSIONKEYBYTES

KxKeyPair = NamedTuple("KxKeyPair", [("public", bytes), ("secret", SecureKey)])
KxKeyPair.__module__ = __name__
KxKeyPair.__doc__ = """An X25519 key-exchange pair: `public` (32 bytes) and `secret` (32-byte SecureKey).

``securekeys.destroy_key(pair)`` destroys the secret key.
"""

SessionKeys = NamedTuple("SessionKeys", [("rx", SecureKey), ("tx", SecureKey)])
SessionKeys.__module__ = __name__
SessionKeys.__doc__ = """Two 32-byte session keys: `rx` decrypts what the peer sent, `tx`
encrypts what is sent to it (the client's tx is the server's rx).

``securekeys.destroy_key(keys)`` destroys both.
"""


cdef int _kx_keypair_call(_Args *a) noexcept nogil:
    return sodium.crypto_kx_keypair(a.pk_out, a.out)


cdef int _kx_seed_keypair_call(_Args *a) noexcept nogil:
    return sodium.crypto_kx_seed_keypair(a.pk_out, a.out, a.key)


# a.pk: our public key, hashed once; a.tag: the peer's, multiplied by (read
# twice there: the small-order check, then the point), then hashed.
cdef int _kx_client_call(_Args *a) noexcept nogil:
    return sodium.crypto_kx_client_session_keys(a.out, a.out2, a.pk, a.key, a.tag)


cdef int _kx_server_call(_Args *a) noexcept nogil:
    return sodium.crypto_kx_server_session_keys(a.out, a.out2, a.pk, a.key, a.tag)


# A scalar multiplication: always worth releasing the GIL.
cdef _Op _KX_KEYPAIR = _Op(call=_kx_keypair_call, name=b"crypto_kx_keypair",
                           failure=SODIUM_INTERNAL, heavy=True, stack=_STACK_SMALL)
cdef _Op _KX_SEED_KEYPAIR = _Op(call=_kx_seed_keypair_call, name=b"crypto_kx_seed_keypair",
                                failure=SODIUM_INTERNAL, heavy=True, stack=_STACK_SMALL)
cdef _Op _KX_CLIENT = _Op(call=_kx_client_call, name=b"crypto_kx_client_session_keys",
                          failure=_REJECTED, heavy=True, stack=_STACK_SMALL)
cdef _Op _KX_SERVER = _Op(call=_kx_server_call, name=b"crypto_kx_server_session_keys",
                          failure=_REJECTED, heavy=True, stack=_STACK_SMALL)


def kx_keypair(seed=None):
    """A new key-exchange pair; the secret key is generated in guarded memory.

    With `seed` (a 32-byte SecureBuffer) the pair is deterministic, as
    crypto_kx_seed_keypair; without it, random.  The secret is READONLY.
    """
    return KxKeyPair(*_keypair(&_KX_KEYPAIR, &_KX_SEED_KEYPAIR, seed, sodium.crypto_kx_SEEDBYTES,
                               sodium.crypto_kx_PUBLICKEYBYTES, sodium.crypto_kx_SECRETKEYBYTES))


cdef object _session_keys(const _Op *op, object ours, object peer_public, str peer_name):
    if not isinstance(ours, KxKeyPair):
        raise TypeError(f"expected a KxKeyPair, not {type(ours).__name__}")
    cdef SecureBuffer secret = _secure_arg(ours.secret, "secret", sodium.crypto_kx_SECRETKEYBYTES)
    cdef _In pk = _NO_INPUT
    cdef _In peer = _NO_INPUT
    cdef _Args a = _NO_ARGS
    cdef unsigned char peer_room[_ROOM]
    try:
        _input_fixed(ours.public, &pk, "public", sodium.crypto_kx_PUBLICKEYBYTES, _READ_ONCE, NULL)
        _input_fixed(peer_public, &peer, peer_name, sodium.crypto_kx_PUBLICKEYBYTES, _READ_TWICE, peer_room)
        a.pk = pk.ptr
        a.tag = peer.ptr
        tx = SecureKey(sodium.crypto_kx_SESSIONKEYBYTES)
        rx = _run_into_new(op, &a, secret, SecureKey(sodium.crypto_kx_SESSIONKEYBYTES), tx)
        return SessionKeys(rx, tx)
    finally:
        _release(&pk)
        _release(&peer)


def kx_client_session_keys(client, server_public):
    """The client's session keys with the server whose public key is
    `server_public` (32 bytes, bytes-like): ``SessionKeys(rx, tx)``, both
    written by libsodium straight into guarded memory, READONLY.

    A public key of the wrong length, or one libsodium rejects (a low-order
    point), is a ValueError.  libsodium reads `server_public` twice (the
    scalar multiplication, then the hash): unless it is ``bytes`` it is
    copied first, so that both read the same key.
    """
    return _session_keys(&_KX_CLIENT, client, server_public, "server_public")


def kx_server_session_keys(server, client_public):
    """The server's session keys with the client whose public key is
    `client_public`: the server's rx is the client's tx and the other way
    round.  Errors as kx_client_session_keys.
    """
    return _session_keys(&_KX_SERVER, server, client_public, "client_public")
