# cython: language_level=3, embedsignature=True, auto_pickle=False
"""Downstream code over the securekeys cimport contract (built by the tests)."""

from libc.string cimport memset

from securekeys cimport (SecureBuffer, SecureKey,
                         SK_NOACCESS, SK_READONLY, SK_READWRITE, SK_DESTROYED)
from securekeys.includes cimport sodium

SK = {"NOACCESS": SK_NOACCESS, "READONLY": SK_READONLY,
      "READWRITE": SK_READWRITE, "DESTROYED": SK_DESTROYED}

cdef int _borrowed = 0        # borrows in progress here; changed with the GIL held
cdef int _most_borrowed = 0


def keyed_hash(SecureBuffer key not None, bytes message not None):
    """BLAKE2b-256 of `message` keyed with `key`, computed in place without the GIL."""
    global _borrowed, _most_borrowed
    cdef unsigned char out[32]
    cdef const unsigned char *m = message
    cdef unsigned long long n = len(message)
    cdef size_t key_len = key.nbytes()
    cdef int rc
    cdef const unsigned char *k = key.borrow_read()
    _borrowed += 1
    _most_borrowed = max(_most_borrowed, _borrowed)
    try:
        with nogil:
            rc = sodium.crypto_generichash(out, sizeof(out), m, n, k, key_len)
    finally:
        _borrowed -= 1
        key.release_read()
    if rc != 0:
        raise ValueError("crypto_generichash failed")
    return out[:sizeof(out)]


def fill(SecureBuffer buf not None, unsigned char value):
    """Set every byte of `buf` to `value` in place, without the GIL."""
    global _borrowed, _most_borrowed
    cdef size_t n = buf.nbytes()
    cdef unsigned char *p = buf.borrow_write()
    _borrowed += 1
    _most_borrowed = max(_most_borrowed, _borrowed)
    try:
        with nogil:
            memset(p, value, n)
    finally:
        _borrowed -= 1
        buf.release_write()


def most_borrowed():
    """The most borrows this module has seen in progress at once."""
    return _most_borrowed


def info(SecureBuffer buf not None):
    return buf.nbytes(), buf.protection()


def protection_while_borrowed(SecureBuffer buf not None, bint write):
    cdef int level
    if write:
        buf.borrow_write()
        level = buf.protection()
        buf.release_write()
    else:
        buf.borrow_read()
        level = buf.protection()
        buf.release_read()
    return level


def is_secure_key(obj):
    return isinstance(obj, SecureKey)


def destroy_while_borrowed(SecureBuffer buf not None):
    """destroy() of a sealed key during a borrow: the borrow keeps the whole
    key to its release, which wipes it.  (protection during, after, byte 0)."""
    cdef const unsigned char *p = buf.borrow_read()
    cdef int during
    cdef int first
    try:
        buf.destroy()
        during = buf.protection()
        first = p[0]          # still the key: the wipe waits for the release
    finally:
        buf.release_read()
    return during, buf.protection(), first


def wipe_all_while_borrowed(SecureBuffer buf not None, bint touch):
    """wipe_all() does not wait: the pointer is dead at once (a touch ends
    the process) and the release raises KeyDestroyedError."""
    import securekeys
    cdef int touched = -1
    cdef const unsigned char *p = buf.borrow_read()
    try:
        securekeys.wipe_all()
        if touch:
            touched = p[0]    # NOACCESS now: this load ends the process
    finally:
        buf.release_read()
    return touched


def release_unborrowed(SecureBuffer buf not None):
    buf.release_read()


def derive(SecureBuffer master not None, bytes label not None):
    """A new 32-byte SecureKey = BLAKE2b(label) keyed with `master`, written
    straight into the key (fill_ptr) and sealed READONLY."""
    cdef SecureKey key = SecureKey(32)
    cdef unsigned char *out = key.fill_ptr()
    cdef const unsigned char *m = label
    cdef unsigned long long label_len = len(label)
    cdef size_t master_len = master.nbytes()
    cdef const unsigned char *k = master.borrow_read()
    cdef int rc
    try:
        with nogil:
            rc = sodium.crypto_generichash(out, 32, m, label_len, k, master_len)
    finally:
        master.release_read()
    if rc != 0:
        key.destroy()
        raise ValueError("crypto_generichash failed")
    key.seal()
    return key


def fill_sealed(SecureKey key not None):
    """fill_ptr() on a key that is no longer new: fatal."""
    key.fill_ptr()


# -- securekeys.crypto's cimport API ----------------------------------------
# Plain wrappers: the sizes of fixed-size arguments are the caller's promise,
# so they are checked here before any pointer is handed over.  Keys are not
# declared `not None`, so that None reaches the cdef functions.

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from securekeys.crypto cimport (aead_encrypt_into, aead_decrypt_from, mac_into, mac_check,
                                keyed_hash_into, derive_key_from, sign_into)


cdef unsigned char *_out(bytes b):
    return <unsigned char *>PyBytes_AS_STRING(b)


cdef int _sized(bytes b, size_t n, str name) except -1:
    if <size_t>len(b) != n:
        raise ValueError(f"{name} must be {n} bytes")
    return 0


def c_aead_encrypt(SecureBuffer key, bytes m not None, bytes nonce not None,
                   bytes ad not None = b""):
    _sized(nonce, sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce")
    out = PyBytes_FromStringAndSize(NULL, len(m) + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES)
    aead_encrypt_into(key, _out(out), m, len(m), ad, len(ad), nonce)
    return out


def c_aead_encrypt_in_place(SecureBuffer key, bytearray buf not None, bytes nonce not None):
    """`buf` holds the plaintext followed by 16 spare bytes; encrypted in place."""
    _sized(nonce, sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce")
    cdef unsigned char *p = <unsigned char *><char *>buf
    aead_encrypt_into(key, p, p, len(buf) - sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES,
                      NULL, 0, nonce)


def c_aead_decrypt(SecureBuffer key, bytes c not None, bytes nonce not None,
                   bytes ad not None = b""):
    _sized(nonce, sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce")
    return aead_decrypt_from(key, c, len(c), ad, len(ad), nonce)


def c_mac(SecureBuffer key, bytes m not None):
    out = PyBytes_FromStringAndSize(NULL, sodium.crypto_auth_BYTES)
    mac_into(key, _out(out), m, len(m))
    return out


def c_mac_check(SecureBuffer key, bytes m not None, bytes tag not None):
    _sized(tag, sodium.crypto_auth_BYTES, "tag")
    return mac_check(key, m, len(m), tag)


def c_keyed_hash(SecureBuffer key, bytes m not None, size_t outlen=32):
    out = PyBytes_FromStringAndSize(NULL, min(outlen, 64))
    keyed_hash_into(key, _out(out), outlen, m, len(m))
    return out


def c_derive(SecureBuffer master, unsigned long long subkey_id, bytes context not None,
             size_t size=32):
    _sized(context, sodium.crypto_kdf_CONTEXTBYTES, "context")
    return derive_key_from(master, subkey_id, context, size)


def c_sign(SecureBuffer secret, bytes m not None):
    sig = PyBytes_FromStringAndSize(NULL, sodium.crypto_sign_BYTES)
    sign_into(secret, _out(sig), m, len(m))
    return sig


def c_null_message(SecureBuffer key):
    """A NULL message pointer with a non-zero length: ValueError, not a crash."""
    cdef unsigned char out[32]
    mac_into(key, out, NULL, 5)
