# cython: language_level=3, embedsignature=True, auto_pickle=False
"""libsodium operations that run on keys in place, in guarded memory.

Keys are ``SecureBuffer`` / ``SecureKey`` objects only; ``bytes`` keys raise
``TypeError``.  A key is *borrowed* for the length of one call (the counted
borrow of ``securekeys._memory``): a NOACCESS key is readable during the call
and NOACCESS again afterwards; a destroyed key ends the process.

Public inputs (messages, nonces, AAD, ciphertexts, public keys, signatures)
are any bytes-like object and are read in place, without a copy.  A
``SecureBuffer`` is accepted there too (it is borrowed like a key), so that a
secret can be encrypted or MACed without leaving guarded memory.

Secret outputs (plaintexts, derived keys, secret signing keys) are written by
libsodium straight into new guarded memory and returned READONLY.  Public
outputs (ciphertexts, tags, hashes, signatures, public keys) are ``bytes``.

The same operations are ``cdef`` functions for Cython code (crypto.pxd,
``from securekeys.crypto cimport ...``); the functions here call them.
"""

from typing import NamedTuple

from cpython.buffer cimport PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EINTR
from libc.string cimport memcpy
from posix.unistd cimport read

from securekeys._memory cimport SecureBuffer, SecureKey
from securekeys._checks cimport raise_errno as _raise_errno
from securekeys.includes cimport sodium

cdef extern from "Python.h":
    Py_ssize_t PY_SSIZE_T_MAX


# ---------------------------------------------------------------------------
# Constants.

AEAD_KEY_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
AEAD_NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
AEAD_TAG_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
KDF_KEY_BYTES = sodium.crypto_kdf_KEYBYTES
KDF_CONTEXT_BYTES = sodium.crypto_kdf_CONTEXTBYTES
MAC_KEY_BYTES = sodium.crypto_auth_KEYBYTES
MAC_BYTES = sodium.crypto_auth_BYTES
SIGN_SEED_BYTES = sodium.crypto_sign_SEEDBYTES
SIGN_PUBLIC_KEY_BYTES = sodium.crypto_sign_PUBLICKEYBYTES
SIGN_SECRET_KEY_BYTES = sodium.crypto_sign_SECRETKEYBYTES
SIGNATURE_BYTES = sodium.crypto_sign_BYTES
PWHASH_SALT_BYTES = sodium.crypto_pwhash_SALTBYTES
OPSLIMIT_MIN = sodium.crypto_pwhash_OPSLIMIT_MIN
OPSLIMIT_INTERACTIVE = sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE
OPSLIMIT_MAX = sodium.crypto_pwhash_OPSLIMIT_MAX
MEMLIMIT_MIN = sodium.crypto_pwhash_MEMLIMIT_MIN
MEMLIMIT_INTERACTIVE = sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE
MEMLIMIT_MAX = sodium.crypto_pwhash_MEMLIMIT_MAX
PASSWORD_MAX_BYTES = 1024

# Below this many input bytes the call is shorter than releasing and taking
# back the GIL; above it, other threads run while libsodium works.
cdef enum:
    _NOGIL_MIN = 1024


# ---------------------------------------------------------------------------
# Errors.  Every libsodium return code goes through _check().

class DecryptionError(ValueError):
    """The ciphertext, nonce, AAD or key do not authenticate: the message was
    forged, corrupted, truncated, or is decrypted with the wrong key."""


cdef enum:
    _INTERNAL = 0      # cannot fail with valid arguments: a bug or a broken libsodium
    _FORGED = 1        # authentication failed
    _NO_MEMORY = 2     # libsodium could not allocate (Argon2)


cdef int _sodium_failed(const char *call, int failure) except -1:
    name = call.decode("ascii")
    if failure == _FORGED:
        raise DecryptionError("decryption failed: the ciphertext, nonce or AAD was "
                              "forged or corrupted, or the key is wrong")
    if failure == _NO_MEMORY:
        raise MemoryError(f"{name}() failed: not enough memory for these limits")
    raise RuntimeError(f"libsodium {name}() failed unexpectedly")


cdef inline int _check(int rc, const char *call, int failure) except -1:
    if rc != 0:
        return _sodium_failed(call, failure)
    return 0


# ---------------------------------------------------------------------------
# Arguments.

cdef int _not_secure(object obj, str name) except -1:
    raise TypeError(f"{name} must be a SecureBuffer, not {type(obj).__name__}")


cdef int _wrong_length(str name, size_t expected, Py_ssize_t got) except -1:
    raise ValueError(f"{name} must be {expected} bytes long, not {got}")


cdef inline SecureBuffer _secure_arg(object obj, str name, size_t expected):
    # A key argument: a SecureBuffer of exactly `expected` bytes (0: any size).
    if not isinstance(obj, SecureBuffer):
        _not_secure(obj, name)
    cdef SecureBuffer buf = <SecureBuffer>obj
    if expected != 0 and buf.nbytes() != expected:
        _wrong_length(name, expected, <Py_ssize_t>buf.nbytes())
    return buf


cdef int _out_of_range(str name, object lo, object hi, object value) except -1:
    raise ValueError(f"{name} must be between {lo} and {hi}, not {value}")


cdef size_t _int_in(object value, str name, size_t lo, size_t hi) except? 0:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        _out_of_range(name, lo, hi, value)
    return <size_t>value


cdef inline int _size_in(size_t value, str name, size_t lo, size_t hi) except -1:
    if not lo <= value <= hi:
        _out_of_range(name, lo, hi, value)
    return 0


cdef inline int _hash_key_len(SecureBuffer key) except -1:
    # crypto_generichash takes keys of 16 to 64 bytes.
    cdef size_t klen = key.nbytes()
    if not sodium.crypto_generichash_KEYBYTES_MIN <= klen <= sodium.crypto_generichash_KEYBYTES_MAX:
        raise ValueError(f"key must be between {sodium.crypto_generichash_KEYBYTES_MIN} and "
                         f"{sodium.crypto_generichash_KEYBYTES_MAX} bytes long, not {klen}")
    return 0


cdef inline int _need(const void *ptr, size_t n, str name) except -1:
    # A pointer argument of the cimport API: NULL only for an empty input.
    if ptr == NULL and n != 0:
        raise ValueError(f"{name} is NULL")
    return 0


cdef inline bint _large(size_t a, size_t b) noexcept nogil:
    # Inputs of a + b bytes: worth releasing the GIL for?  (Cannot overflow.)
    return a >= _NOGIL_MIN or b >= _NOGIL_MIN or a + b >= _NOGIL_MIN


# A public input read in place.  `bytes` is read directly; other objects are
# held through the buffer protocol, a SecureBuffer through a counted borrow.
cdef struct _In:
    const unsigned char *ptr
    Py_ssize_t len
    void *borrowed           # the SecureBuffer borrowed (the caller holds a reference)
    bint has_view
    Py_buffer view


cdef int _input(object obj, _In *inp, str name) except -1:
    cdef SecureBuffer buf
    inp.borrowed = NULL
    inp.has_view = False
    if PyBytes_CheckExact(obj):
        inp.ptr = <const unsigned char *>PyBytes_AS_STRING(obj)
        inp.len = PyBytes_GET_SIZE(obj)
        return 0
    if isinstance(obj, SecureBuffer):
        buf = <SecureBuffer>obj
        inp.ptr = buf.borrow_read()
        inp.len = <Py_ssize_t>buf.nbytes()
        inp.borrowed = <void *>buf
        return 0
    if isinstance(obj, str) or not PyObject_CheckBuffer(obj):
        raise TypeError(f"{name} must be a bytes-like object, not {type(obj).__name__}")
    PyObject_GetBuffer(obj, &inp.view, PyBUF_SIMPLE)
    inp.has_view = True
    inp.ptr = <const unsigned char *>inp.view.buf
    inp.len = inp.view.len
    return 0


cdef inline int _input_fixed(object obj, _In *inp, str name, size_t expected) except -1:
    _input(obj, inp, name)
    if <size_t>inp.len != expected:
        try:
            _wrong_length(name, expected, inp.len)
        finally:
            _release(inp)
    return 0


cdef inline int _release(_In *inp) except -1:
    # Safe to call twice and on an _In that _input() never filled.
    cdef void *borrowed = inp.borrowed
    if inp.has_view:
        inp.has_view = False
        PyBuffer_Release(&inp.view)
    if borrowed != NULL:
        inp.borrowed = NULL
        (<SecureBuffer>borrowed).release_read()
    return 0


cdef inline void _init(_In *inp) noexcept:
    inp.ptr = NULL
    inp.len = 0
    inp.borrowed = NULL
    inp.has_view = False


# ---------------------------------------------------------------------------
# The operations.  Each libsodium call is made once, in a cdef function of the
# cimport API (crypto.pxd); the Python functions below turn their arguments
# into pointers and lengths and call it.  The cdef functions validate what
# they are given themselves, as Cython callers reach them directly.


# ---------------------------------------------------------------------------
# AEAD: XChaCha20-Poly1305-IETF.

cdef int aead_encrypt_into(SecureBuffer key, unsigned char *out,
                           const unsigned char *m, size_t mlen,
                           const unsigned char *ad, size_t adlen,
                           const unsigned char *nonce) except -1:
    _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    _need(out, 1, "out"); _need(nonce, 1, "nonce")
    _need(m, mlen, "m"); _need(ad, adlen, "ad")
    if mlen > sodium.crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX:
        raise ValueError("plaintext is too long")
    cdef unsigned long long clen = 0
    cdef int rc
    cdef const unsigned char *k = key.borrow_read()
    try:
        if _large(mlen, adlen):
            with nogil:
                rc = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
                    out, &clen, m, mlen, ad, adlen, NULL, nonce, k)
        else:
            rc = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
                out, &clen, m, mlen, ad, adlen, NULL, nonce, k)
    finally:
        key.release_read()
    return _check(rc, b"crypto_aead_xchacha20poly1305_ietf_encrypt", _INTERNAL)


cdef SecureBuffer aead_decrypt_from(SecureBuffer key,
                                    const unsigned char *c, size_t clen,
                                    const unsigned char *ad, size_t adlen,
                                    const unsigned char *nonce):
    _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    _need(nonce, 1, "nonce"); _need(c, clen, "c"); _need(ad, adlen, "ad")
    if clen < sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES:
        raise DecryptionError(
            f"ciphertext must be at least "
            f"{sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES} bytes long "
            f"(the tag), not {clen}")
    cdef size_t expected = clen - sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
    cdef SecureBuffer result = None
    cdef unsigned char *out = NULL
    cdef const unsigned char *k
    cdef unsigned long long mlen = 0
    cdef int rc = -1
    try:
        if expected > 0:
            result = SecureBuffer(expected)
            out = result.fill_ptr()
        k = key.borrow_read()
        try:
            # With out == NULL (empty plaintext) libsodium only checks the tag.
            if _large(clen, adlen):
                with nogil:
                    rc = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                        out, &mlen, NULL, c, clen, ad, adlen, nonce, k)
            else:
                rc = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    out, &mlen, NULL, c, clen, ad, adlen, nonce, k)
        finally:
            key.release_read()
        _check(rc, b"crypto_aead_xchacha20poly1305_ietf_decrypt", _FORGED)
        if mlen != expected:
            _check(-1, b"crypto_aead_xchacha20poly1305_ietf_decrypt", _INTERNAL)
        if result is None:
            raise ValueError("nothing to decrypt: the ciphertext is authentic but "
                             "its plaintext is empty (a SecureBuffer cannot be empty)")
        result.seal()
    except BaseException:
        if result is not None:
            result.destroy()
        raise
    return result


def aead_encrypt(key, plaintext, nonce, aad=None):
    """Encrypt and authenticate `plaintext` (and authenticate `aad`).

    XChaCha20-Poly1305-IETF with a 32-byte key and a 24-byte nonce; returns
    ciphertext + 16-byte tag as bytes.  An empty plaintext is allowed (the
    result is just the tag).  `aad=None` is the same as ``aad=b""``.
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    cdef _In m, n, ad
    _init(&m); _init(&n); _init(&ad)
    try:
        _input_fixed(nonce, &n, "nonce", sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
        _input(plaintext, &m, "plaintext")
        if aad is not None:
            _input(aad, &ad, "aad")
        if m.len > PY_SSIZE_T_MAX - <Py_ssize_t>sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES:
            raise ValueError("plaintext is too long")
        result = PyBytes_FromStringAndSize(NULL, m.len + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES)
        aead_encrypt_into(k, <unsigned char *>PyBytes_AS_STRING(result), m.ptr, <size_t>m.len,
                          ad.ptr, <size_t>ad.len, n.ptr)
    finally:
        _release(&m); _release(&n); _release(&ad)
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
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    cdef _In c, n, ad
    _init(&c); _init(&n); _init(&ad)
    try:
        _input_fixed(nonce, &n, "nonce", sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
        _input(ciphertext, &c, "ciphertext")
        if aad is not None:
            _input(aad, &ad, "aad")
        return aead_decrypt_from(k, c.ptr, <size_t>c.len, ad.ptr, <size_t>ad.len, n.ptr)
    finally:
        _release(&c); _release(&n); _release(&ad)


# ---------------------------------------------------------------------------
# Key derivation: crypto_kdf (BLAKE2b).

cdef SecureKey derive_key_from(SecureBuffer master, unsigned long long subkey_id,
                               const unsigned char *context, size_t size):
    _secure_arg(master, "master", sodium.crypto_kdf_KEYBYTES)
    _need(context, 1, "context")
    _size_in(size, "size", sodium.crypto_kdf_BYTES_MIN, sodium.crypto_kdf_BYTES_MAX)
    cdef SecureKey result = None
    cdef const unsigned char *k
    cdef int rc
    try:
        result = SecureKey(size)       # born READWRITE, so that libsodium can fill it
        k = master.borrow_read()
        try:
            rc = sodium.crypto_kdf_derive_from_key(
                result.fill_ptr(), size, subkey_id, <const char *>context, k)
        finally:
            master.release_read()
        _check(rc, b"crypto_kdf_derive_from_key", _INTERNAL)
        result.seal()
    except BaseException:
        if result is not None:
            result.destroy()
        raise
    return result


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
    cdef _In ctx
    _init(&ctx)
    try:
        _input_fixed(context, &ctx, "context", sodium.crypto_kdf_CONTEXTBYTES)
        return derive_key_from(mk, sub_id, ctx.ptr, n)
    finally:
        _release(&ctx)


# ---------------------------------------------------------------------------
# MAC: crypto_auth (HMAC-SHA-512-256) and keyed BLAKE2b.

cdef int mac_into(SecureBuffer key, unsigned char *out,
                  const unsigned char *m, size_t mlen) except -1:
    _secure_arg(key, "key", sodium.crypto_auth_KEYBYTES)
    _need(out, 1, "out"); _need(m, mlen, "m")
    cdef int rc
    cdef const unsigned char *k = key.borrow_read()
    try:
        if _large(mlen, 0):
            with nogil:
                rc = sodium.crypto_auth(out, m, mlen, k)
        else:
            rc = sodium.crypto_auth(out, m, mlen, k)
    finally:
        key.release_read()
    return _check(rc, b"crypto_auth", _INTERNAL)


cdef int mac_check(SecureBuffer key, const unsigned char *m, size_t mlen,
                   const unsigned char *tag) except -1:
    _secure_arg(key, "key", sodium.crypto_auth_KEYBYTES)
    _need(tag, 1, "tag"); _need(m, mlen, "m")
    cdef int rc
    cdef const unsigned char *k = key.borrow_read()
    try:
        if _large(mlen, 0):
            with nogil:
                rc = sodium.crypto_auth_verify(tag, m, mlen, k)
        else:
            rc = sodium.crypto_auth_verify(tag, m, mlen, k)
    finally:
        key.release_read()
    return rc == 0      # -1 is the answer "not authentic", not a failure


cdef int keyed_hash_into(SecureBuffer key, unsigned char *out, size_t outlen,
                         const unsigned char *m, size_t mlen) except -1:
    _secure_arg(key, "key", 0)
    _hash_key_len(key)
    _size_in(outlen, "outlen", sodium.crypto_generichash_BYTES_MIN,
             sodium.crypto_generichash_BYTES_MAX)
    _need(out, 1, "out"); _need(m, mlen, "m")
    cdef size_t klen = key.nbytes()
    cdef int rc
    cdef const unsigned char *k = key.borrow_read()
    try:
        if _large(mlen, 0):
            with nogil:
                rc = sodium.crypto_generichash(out, outlen, m, mlen, k, klen)
        else:
            rc = sodium.crypto_generichash(out, outlen, m, mlen, k, klen)
    finally:
        key.release_read()
    return _check(rc, b"crypto_generichash", _INTERNAL)


def mac(key, message):
    """The 32-byte HMAC-SHA-512-256 tag of `message` under a 32-byte key."""
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_auth_KEYBYTES)
    cdef _In m
    _init(&m)
    try:
        _input(message, &m, "message")
        result = PyBytes_FromStringAndSize(NULL, sodium.crypto_auth_BYTES)
        mac_into(k, <unsigned char *>PyBytes_AS_STRING(result), m.ptr, <size_t>m.len)
    finally:
        _release(&m)
    return result


def mac_verify(key, message, tag):
    """True when `tag` (32 bytes) is the crypto_auth tag of `message`.

    The comparison is constant-time (crypto_auth_verify).
    """
    cdef SecureBuffer k = _secure_arg(key, "key", sodium.crypto_auth_KEYBYTES)
    cdef _In m, t
    _init(&m); _init(&t)
    try:
        _input_fixed(tag, &t, "tag", sodium.crypto_auth_BYTES)
        _input(message, &m, "message")
        return mac_check(k, m.ptr, <size_t>m.len, t.ptr) == 1
    finally:
        _release(&m); _release(&t)


def keyed_hash(key, message, size=32):
    """Keyed BLAKE2b (crypto_generichash) of `message`: `size` bytes, 16..64.

    The key is a SecureBuffer of 16 to 64 bytes.
    """
    cdef SecureBuffer k = _secure_arg(key, "key", 0)
    cdef size_t n = _int_in(size, "size", sodium.crypto_generichash_BYTES_MIN,
                            sodium.crypto_generichash_BYTES_MAX)
    _hash_key_len(k)
    cdef _In m
    _init(&m)
    try:
        _input(message, &m, "message")
        result = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
        keyed_hash_into(k, <unsigned char *>PyBytes_AS_STRING(result), n, m.ptr, <size_t>m.len)
    finally:
        _release(&m)
    return result


# ---------------------------------------------------------------------------
# Signatures: Ed25519.

# The functional form, so that the field types are the real classes
# (typing.get_type_hints works; SecureKey is only cimported here).
SigningKeyPair = NamedTuple("SigningKeyPair", [("public", bytes), ("secret", SecureKey)])
SigningKeyPair.__module__ = __name__
SigningKeyPair.__doc__ = """An Ed25519 key pair: `public` (32 bytes) and `secret` (64-byte SecureKey).

``securekeys.destroy_key(pair)`` destroys the secret key.
"""


def signing_keypair(seed=None):
    """A new Ed25519 key pair; the secret key is generated in guarded memory.

    With `seed` (a 32-byte SecureBuffer) the pair is deterministic, as
    crypto_sign_seed_keypair; without it, random.  The secret is READONLY.
    """
    cdef SecureBuffer s = None
    cdef const unsigned char *sp
    cdef SecureKey secret = None
    cdef int rc
    if seed is not None:
        s = _secure_arg(seed, "seed", sodium.crypto_sign_SEEDBYTES)
    public = PyBytes_FromStringAndSize(NULL, sodium.crypto_sign_PUBLICKEYBYTES)
    cdef unsigned char *pk = <unsigned char *>PyBytes_AS_STRING(public)
    cdef unsigned char *sk
    try:
        secret = SecureKey(sodium.crypto_sign_SECRETKEYBYTES)
        sk = secret.fill_ptr()
        if s is None:
            with nogil:
                rc = sodium.crypto_sign_keypair(pk, sk)
            _check(rc, b"crypto_sign_keypair", _INTERNAL)
        else:
            sp = s.borrow_read()
            try:
                with nogil:
                    rc = sodium.crypto_sign_seed_keypair(pk, sk, sp)
            finally:
                s.release_read()
            _check(rc, b"crypto_sign_seed_keypair", _INTERNAL)
        secret.seal()
    except BaseException:
        if secret is not None:
            secret.destroy()
        raise
    return SigningKeyPair(public, secret)


cdef int sign_into(SecureBuffer secret, unsigned char *sig,
                   const unsigned char *m, size_t mlen) except -1:
    _secure_arg(secret, "secret", sodium.crypto_sign_SECRETKEYBYTES)
    _need(sig, 1, "sig"); _need(m, mlen, "m")
    cdef unsigned long long siglen = 0
    cdef int rc
    cdef const unsigned char *k = secret.borrow_read()
    try:
        # Always without the GIL: a signature costs far more than handing it over.
        with nogil:
            rc = sodium.crypto_sign_detached(sig, &siglen, m, mlen, k)
    finally:
        secret.release_read()
    if rc == 0 and siglen != sodium.crypto_sign_BYTES:
        rc = -1
    return _check(rc, b"crypto_sign_detached", _INTERNAL)


def sign(secret, message):
    """The 64-byte detached Ed25519 signature of `message` by `secret` (64 bytes)."""
    cdef SecureBuffer sk = _secure_arg(secret, "secret", sodium.crypto_sign_SECRETKEYBYTES)
    cdef _In m
    _init(&m)
    try:
        _input(message, &m, "message")
        result = PyBytes_FromStringAndSize(NULL, sodium.crypto_sign_BYTES)
        sign_into(sk, <unsigned char *>PyBytes_AS_STRING(result), m.ptr, <size_t>m.len)
    finally:
        _release(&m)
    return result


def verify(public, message, signature):
    """True when `signature` (64 bytes) is a valid Ed25519 signature of
    `message` under `public` (32 bytes, bytes-like)."""
    cdef _In pk, m, sig
    cdef int rc
    _init(&pk); _init(&m); _init(&sig)
    try:
        _input_fixed(public, &pk, "public", sodium.crypto_sign_PUBLICKEYBYTES)
        _input_fixed(signature, &sig, "signature", sodium.crypto_sign_BYTES)
        _input(message, &m, "message")
        with nogil:
            rc = sodium.crypto_sign_verify_detached(sig.ptr, m.ptr,
                                                    <unsigned long long>m.len, pk.ptr)
    finally:
        _release(&pk); _release(&m); _release(&sig)
    return rc == 0


# ---------------------------------------------------------------------------
# Passwords: Argon2id and reading from the terminal.

def password_key(password, salt, size=32, *, opslimit=OPSLIMIT_INTERACTIVE,
                 memlimit=MEMLIMIT_INTERACTIVE):
    """Stretch a password (a SecureBuffer) into a new READONLY SecureKey.

    Argon2id (crypto_pwhash, ALG_ARGON2ID13) with a 16-byte salt; `size` is
    at least 16.  `opslimit` / `memlimit` default to libsodium's INTERACTIVE
    limits (OPSLIMIT_INTERACTIVE, MEMLIMIT_INTERACTIVE).  The GIL is released
    while Argon2 runs.  MemoryError when libsodium cannot get `memlimit` bytes.
    """
    cdef SecureBuffer pw = _secure_arg(password, "password", 0)
    cdef size_t n = _int_in(size, "size", sodium.crypto_pwhash_BYTES_MIN,
                            min(sodium.crypto_pwhash_BYTES_MAX, <size_t>(PY_SSIZE_T_MAX // 2)))
    cdef unsigned long long ops = _int_in(opslimit, "opslimit", sodium.crypto_pwhash_OPSLIMIT_MIN,
                                          sodium.crypto_pwhash_OPSLIMIT_MAX)
    cdef size_t mem = _int_in(memlimit, "memlimit", sodium.crypto_pwhash_MEMLIMIT_MIN,
                              sodium.crypto_pwhash_MEMLIMIT_MAX)
    cdef size_t pwlen = pw.nbytes()
    if pwlen > sodium.crypto_pwhash_PASSWD_MAX:
        raise ValueError(f"password must be at most {sodium.crypto_pwhash_PASSWD_MAX} bytes long")
    cdef _In s
    cdef const unsigned char *pp
    cdef SecureKey result = None
    cdef unsigned char *out
    cdef int rc
    _init(&s)
    try:
        _input_fixed(salt, &s, "salt", sodium.crypto_pwhash_SALTBYTES)
        result = SecureKey(n)
        out = result.fill_ptr()
        pp = pw.borrow_read()
        try:
            with nogil:
                rc = sodium.crypto_pwhash(out, n, <const char *>pp, pwlen,
                                          s.ptr, ops, mem, sodium.crypto_pwhash_ALG_ARGON2ID13)
        finally:
            pw.release_read()
        _check(rc, b"crypto_pwhash", _NO_MEMORY)
        result.seal()
    except BaseException:
        if result is not None:
            result.destroy()
        raise
    finally:
        _release(&s)
    return result


cdef Py_ssize_t _read_line(int fd, unsigned char *buf, Py_ssize_t cap, bint *eof) except -2:
    # read(2) one byte at a time into `buf` until a newline (not stored),
    # end of file, or `cap` bytes.  Returns the count, or -1 when the line is
    # longer than `cap`; `eof` tells whether input ended without a newline.  One byte at a time so that nothing after the newline
    # is consumed; the bytes only ever live in `buf` (guarded memory).
    cdef Py_ssize_t count = 0
    cdef ssize_t got
    cdef int err = 0
    while True:
        with nogil:
            got = read(fd, buf + count, 1)
            if got < 0:
                err = errno
        if got < 0:
            if err == EINTR:
                PyErr_CheckSignals()    # Ctrl-C raises here
                continue
            _raise_errno("read from the terminal", err)
        if got == 0:
            eof[0] = True               # end of file (Ctrl-D)
            return count
        if buf[count] == b'\n':
            buf[count] = 0
            return count
        count += 1
        if count == cap:
            return -1


def read_password(prompt="Password: "):
    """Read a passphrase from the controlling terminal into a READONLY SecureBuffer.

    Opens ``/dev/tty`` (OSError when the process has no controlling terminal),
    writes `prompt` to it, turns echo off (restored in any case), and reads
    with read(2), one byte at a time, straight into guarded memory up to the
    newline; the passphrase never exists as a str or bytes.  The result holds
    exactly the bytes typed, without the newline.

    ValueError when nothing was entered (a SecureBuffer cannot be empty) or
    when the line is longer than PASSWORD_MAX_BYTES (1024) bytes; EOFError
    on end of file before any input.
    """
    import os
    import termios

    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    cdef SecureBuffer line = None
    cdef SecureBuffer result = None
    cdef Py_ssize_t count = 0
    cdef unsigned char *buf
    cdef bint eof = False
    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    try:
        try:
            old = termios.tcgetattr(fd)
            new = list(old)
            new[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)
        except termios.error as exc:     # not an OSError subclass
            raise OSError(*exc.args) from None
        try:
            os.write(fd, prompt.encode())
            line = SecureBuffer(PASSWORD_MAX_BYTES)
            buf = line.borrow_write()
            try:
                count = _read_line(fd, buf, PASSWORD_MAX_BYTES, &eof)
            finally:
                line.release_write()
        finally:
            # TCSAFLUSH also discards anything typed but not read, so that no
            # part of an overlong line reaches the next reader of the terminal.
            termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            os.write(fd, b"\n")     # the newline that echo did not show
        if count < 0:
            raise ValueError(f"password is longer than {PASSWORD_MAX_BYTES} bytes")
        if count == 0:
            if eof:
                raise EOFError("end of file on the terminal before a password")
            raise ValueError("no password was entered")
        result = SecureBuffer(count)
        memcpy(result.fill_ptr(), line.borrow_read(), <size_t>count)   # guarded to guarded
        line.release_read()
        result.seal()
    except BaseException:
        if result is not None:
            result.destroy()
        raise
    finally:
        if line is not None:
            line.destroy()
        os.close(fd)
    return result
