# The cimport API of securekeys.crypto: `from securekeys.crypto cimport ...`.
#
# The same operations as the Python functions of securekeys.crypto (which
# call these), at pointer level for Cython code.  This file is an ABI: keep it
# small.  Common rules, documented under "Using securekeys from Cython" in the
# README:
#   - call with the GIL held; each function borrows the key itself (counted,
#     released in `finally`), so a NOACCESS key is NOACCESS again afterwards
#     and a destroyed key ends the process; the GIL is released around
#     libsodium for inputs of 1024 bytes or more (signing: always);
#   - keys are SecureBuffer / SecureKey; None is TypeError, a wrong key size
#     ValueError; public data are `const unsigned char *` + length (NULL only
#     with length 0), fixed-size arguments are read in full: the caller
#     guarantees their sizes (sodium.crypto_*BYTES);
#   - errors raise the exceptions of the Python API (DecryptionError is
#     securekeys.errors.DecryptionError, re-exported by securekeys.crypto);
#   - `*_into` writes a public result into the caller's `out`; `*_from`
#     returns secret results as new guarded memory, READONLY, never a copy;
#   - inputs are read in place: they must not change during the call (the
#     Python functions snapshot a mutable input that libsodium reads twice,
#     such as aead_decrypt's ciphertext; at pointer level that is the
#     caller's part);
#   - after each libsodium call the stack it used and the registers it may
#     have left secrets in are zeroed, on the calling thread.
from securekeys._memory cimport SecureBuffer, SecureKey

# XChaCha20-Poly1305-IETF with a 32-byte key and a 24-byte nonce: writes
# mlen + 16 bytes (ciphertext, then tag) to `out`, which may be `m` itself.
cdef int aead_encrypt_into(SecureBuffer key, unsigned char *out,
                           const unsigned char *m, size_t mlen,
                           const unsigned char *ad, size_t adlen,
                           const unsigned char *nonce) except -1

# Authenticates and decrypts clen bytes (ciphertext + 16-byte tag) into a new
# READONLY SecureBuffer of clen - 16 bytes.  DecryptionError when forged or
# shorter than the tag (nothing left behind); ValueError when authentic but
# empty (a SecureBuffer cannot be empty).
cdef SecureBuffer aead_decrypt_from(SecureBuffer key,
                                    const unsigned char *c, size_t clen,
                                    const unsigned char *ad, size_t adlen,
                                    const unsigned char *nonce)

# aead_decrypt_into: the same into the caller's `out`, a writable SecureBuffer (not a
# SecureKey, not `key`) of at least clen - 16 bytes, borrowed for writing
# during the call: returns the plaintext length (0 for an authentic empty
# plaintext).  `out` too small is ValueError; forged is DecryptionError; in
# both cases `out` is left exactly as it was.  `c`, `ad` and `nonce` are read
# twice (the tag is checked, then the plaintext decrypted).
cdef Py_ssize_t aead_decrypt_to(SecureBuffer key, SecureBuffer out,
                                const unsigned char *c, size_t clen,
                                const unsigned char *ad, size_t adlen,
                                const unsigned char *nonce) except -1

# encrypt: a random nonce, then the AEAD: writes mlen + 40 bytes to `out`
# (nonce 24 || ciphertext || tag 16); `out` must not overlap `m`.
cdef int encrypt_into(SecureBuffer key, unsigned char *out,
                      const unsigned char *m, size_t mlen,
                      const unsigned char *ad, size_t adlen) except -1

# decrypt: what encrypt_into wrote (sealed_len >= 40, else DecryptionError),
# as aead_decrypt_from / aead_decrypt_to (Python's decrypt / decrypt_into).
cdef SecureBuffer decrypt_from(SecureBuffer key, const unsigned char *sealed, size_t sealed_len,
                               const unsigned char *ad, size_t adlen)
cdef Py_ssize_t decrypt_to(SecureBuffer key, SecureBuffer out,
                           const unsigned char *sealed, size_t sealed_len,
                           const unsigned char *ad, size_t adlen) except -1

# HMAC-SHA-512-256 (crypto_auth) with a 32-byte key: writes the 32-byte tag.
cdef int mac_into(SecureBuffer key, unsigned char *out,
                  const unsigned char *m, size_t mlen) except -1

# 1 when the 32-byte `tag` is the crypto_auth tag of m (constant time), else 0.
cdef int mac_check(SecureBuffer key, const unsigned char *m, size_t mlen,
                   const unsigned char *tag) except -1

# Keyed BLAKE2b (crypto_generichash): a 16..64-byte key, outlen 16..64.
cdef int keyed_hash_into(SecureBuffer key, unsigned char *out, size_t outlen,
                         const unsigned char *m, size_t mlen) except -1

# crypto_kdf subkey `subkey_id` of a 32-byte master key, with an 8-byte
# context, as a new READONLY SecureKey of `size` bytes (16..64).
cdef SecureKey derive_key_from(SecureBuffer master, unsigned long long subkey_id,
                               const unsigned char *context, size_t size)

# Detached Ed25519 signature of m by a 64-byte secret key: writes 64 bytes.
cdef int sign_into(SecureBuffer secret, unsigned char *sig,
                   const unsigned char *m, size_t mlen) except -1
