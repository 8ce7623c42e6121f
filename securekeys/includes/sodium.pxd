# libsodium declarations, as in sodium.h (1.0.18 and later).
#
# Plain extern declarations without `except` clauses: every return code is
# checked by the caller.  Cimport this module as a namespace so that each C call
# reads as C:  `from securekeys.includes cimport sodium` ... `sodium.sodium_init()`.

cdef extern from "sodium.h" nogil:
    # core.h, version.h
    int sodium_init()
    int sodium_set_misuse_handler(void (*handler)())
    const char *sodium_version_string()
    int sodium_library_version_major()
    int sodium_library_version_minor()

    # utils.h: guarded heap allocations and constant-time helpers
    void *sodium_malloc(size_t size)
    void *sodium_allocarray(size_t count, size_t size)
    void sodium_free(void *ptr)
    int sodium_mprotect_noaccess(void *ptr)
    int sodium_mprotect_readonly(void *ptr)
    int sodium_mprotect_readwrite(void *ptr)
    int sodium_mlock(void *addr, size_t len)
    int sodium_munlock(void *addr, size_t len)
    void sodium_memzero(void *pnt, size_t len)
    int sodium_memcmp(const void *b1, const void *b2, size_t len)
    int sodium_is_zero(const unsigned char *n, size_t nlen)
    # Zeroes `len` bytes of stack below the caller's frame (libsodium >= 1.0.16).
    void sodium_stackzero(const size_t len)

    # runtime.h: the CPU features libsodium detected at sodium_init()
    int sodium_runtime_has_avx()
    int sodium_runtime_has_avx512f()

    # utils.h: constant-time text codecs (key files in hex or base64)
    char *sodium_bin2hex(char *hex, size_t hex_maxlen,
                         const unsigned char *bin, size_t bin_len)
    int sodium_hex2bin(unsigned char *bin, size_t bin_maxlen,
                       const char *hex, size_t hex_len, const char *ignore,
                       size_t *bin_len, const char **hex_end)
    enum:
        sodium_base64_VARIANT_ORIGINAL
        sodium_base64_VARIANT_ORIGINAL_NO_PADDING
        sodium_base64_VARIANT_URLSAFE
        sodium_base64_VARIANT_URLSAFE_NO_PADDING
    char *sodium_bin2base64(char *b64, size_t b64_maxlen,
                            const unsigned char *bin, size_t bin_len, int variant)
    int sodium_base642bin(unsigned char *bin, size_t bin_maxlen,
                          const char *b64, size_t b64_len, const char *ignore,
                          size_t *bin_len, const char **b64_end, int variant)

    # randombytes.h
    void randombytes_buf(void *buf, size_t size)

    # crypto_generichash.h (BLAKE2b)
    size_t crypto_generichash_BYTES
    size_t crypto_generichash_BYTES_MIN
    size_t crypto_generichash_BYTES_MAX
    size_t crypto_generichash_KEYBYTES
    size_t crypto_generichash_KEYBYTES_MIN
    size_t crypto_generichash_KEYBYTES_MAX
    int crypto_generichash(unsigned char *out, size_t outlen,
                           const unsigned char *in_, unsigned long long inlen,
                           const unsigned char *key, size_t keylen)

    # crypto_aead_xchacha20poly1305.h
    size_t crypto_aead_xchacha20poly1305_ietf_KEYBYTES
    size_t crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
    size_t crypto_aead_xchacha20poly1305_ietf_ABYTES
    size_t crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX
    int crypto_aead_xchacha20poly1305_ietf_encrypt(
        unsigned char *c, unsigned long long *clen_p,
        const unsigned char *m, unsigned long long mlen,
        const unsigned char *ad, unsigned long long adlen,
        const unsigned char *nsec, const unsigned char *npub,
        const unsigned char *k)
    int crypto_aead_xchacha20poly1305_ietf_decrypt(
        unsigned char *m, unsigned long long *mlen_p,
        unsigned char *nsec,
        const unsigned char *c, unsigned long long clen,
        const unsigned char *ad, unsigned long long adlen,
        const unsigned char *npub, const unsigned char *k)

    # crypto_kdf.h
    size_t crypto_kdf_BYTES_MIN
    size_t crypto_kdf_BYTES_MAX
    size_t crypto_kdf_CONTEXTBYTES
    size_t crypto_kdf_KEYBYTES
    int crypto_kdf_derive_from_key(unsigned char *subkey, size_t subkey_len,
                                   unsigned long long subkey_id,
                                   const char *ctx, const unsigned char *key)

    # crypto_auth.h (HMAC-SHA-512-256)
    size_t crypto_auth_BYTES
    size_t crypto_auth_KEYBYTES
    int crypto_auth(unsigned char *out, const unsigned char *in_,
                    unsigned long long inlen, const unsigned char *k)
    int crypto_auth_verify(const unsigned char *h, const unsigned char *in_,
                           unsigned long long inlen, const unsigned char *k)

    # crypto_sign.h (Ed25519)
    size_t crypto_sign_BYTES
    size_t crypto_sign_SEEDBYTES
    size_t crypto_sign_PUBLICKEYBYTES
    size_t crypto_sign_SECRETKEYBYTES
    int crypto_sign_keypair(unsigned char *pk, unsigned char *sk)
    int crypto_sign_seed_keypair(unsigned char *pk, unsigned char *sk,
                                 const unsigned char *seed)
    int crypto_sign_detached(unsigned char *sig, unsigned long long *siglen_p,
                             const unsigned char *m, unsigned long long mlen,
                             const unsigned char *sk)
    int crypto_sign_verify_detached(const unsigned char *sig,
                                    const unsigned char *m,
                                    unsigned long long mlen,
                                    const unsigned char *pk)

    # crypto_pwhash.h (Argon2id)
    int crypto_pwhash_ALG_ARGON2ID13
    size_t crypto_pwhash_SALTBYTES
    size_t crypto_pwhash_BYTES_MIN
    size_t crypto_pwhash_BYTES_MAX
    size_t crypto_pwhash_PASSWD_MAX
    unsigned long long crypto_pwhash_OPSLIMIT_MIN
    unsigned long long crypto_pwhash_OPSLIMIT_MAX
    unsigned long long crypto_pwhash_OPSLIMIT_INTERACTIVE
    unsigned long long crypto_pwhash_OPSLIMIT_MODERATE
    unsigned long long crypto_pwhash_OPSLIMIT_SENSITIVE
    size_t crypto_pwhash_MEMLIMIT_MIN
    size_t crypto_pwhash_MEMLIMIT_MAX
    size_t crypto_pwhash_MEMLIMIT_INTERACTIVE
    size_t crypto_pwhash_MEMLIMIT_MODERATE
    size_t crypto_pwhash_MEMLIMIT_SENSITIVE
    int crypto_pwhash(unsigned char *out, unsigned long long outlen,
                      const char *passwd, unsigned long long passwdlen,
                      const unsigned char *salt,
                      unsigned long long opslimit, size_t memlimit, int alg)

    # crypto_kx.h (X25519 + BLAKE2b-512 session keys)
    size_t crypto_kx_PUBLICKEYBYTES
    size_t crypto_kx_SECRETKEYBYTES
    size_t crypto_kx_SEEDBYTES
    size_t crypto_kx_SESSIONKEYBYTES
    int crypto_kx_keypair(unsigned char *pk, unsigned char *sk)
    int crypto_kx_seed_keypair(unsigned char *pk, unsigned char *sk,
                               const unsigned char *seed)
    int crypto_kx_client_session_keys(unsigned char *rx, unsigned char *tx,
                                      const unsigned char *client_pk,
                                      const unsigned char *client_sk,
                                      const unsigned char *server_pk)
    int crypto_kx_server_session_keys(unsigned char *rx, unsigned char *tx,
                                      const unsigned char *server_pk,
                                      const unsigned char *server_sk,
                                      const unsigned char *client_pk)

    # crypto_box.h (X25519-XSalsa20-Poly1305; sealed boxes)
    size_t crypto_box_PUBLICKEYBYTES
    size_t crypto_box_SECRETKEYBYTES
    size_t crypto_box_SEEDBYTES
    size_t crypto_box_SEALBYTES
    size_t crypto_box_MESSAGEBYTES_MAX
    int crypto_box_keypair(unsigned char *pk, unsigned char *sk)
    int crypto_box_seed_keypair(unsigned char *pk, unsigned char *sk,
                                const unsigned char *seed)
    int crypto_box_seal(unsigned char *c, const unsigned char *m,
                        unsigned long long mlen, const unsigned char *pk)
    int crypto_box_seal_open(unsigned char *m, const unsigned char *c,
                             unsigned long long clen,
                             const unsigned char *pk, const unsigned char *sk)

    # crypto_secretstream_xchacha20poly1305.h
    ctypedef struct crypto_secretstream_xchacha20poly1305_state:
        pass
    size_t crypto_secretstream_xchacha20poly1305_ABYTES
    size_t crypto_secretstream_xchacha20poly1305_HEADERBYTES
    size_t crypto_secretstream_xchacha20poly1305_KEYBYTES
    size_t crypto_secretstream_xchacha20poly1305_MESSAGEBYTES_MAX
    unsigned char crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
    unsigned char crypto_secretstream_xchacha20poly1305_TAG_FINAL
    size_t crypto_secretstream_xchacha20poly1305_statebytes()
    int crypto_secretstream_xchacha20poly1305_init_push(
        crypto_secretstream_xchacha20poly1305_state *state,
        unsigned char *header, const unsigned char *k)
    int crypto_secretstream_xchacha20poly1305_push(
        crypto_secretstream_xchacha20poly1305_state *state,
        unsigned char *c, unsigned long long *clen_p,
        const unsigned char *m, unsigned long long mlen,
        const unsigned char *ad, unsigned long long adlen, unsigned char tag)
    int crypto_secretstream_xchacha20poly1305_init_pull(
        crypto_secretstream_xchacha20poly1305_state *state,
        const unsigned char *header, const unsigned char *k)
    int crypto_secretstream_xchacha20poly1305_pull(
        crypto_secretstream_xchacha20poly1305_state *state,
        unsigned char *m, unsigned long long *mlen_p, unsigned char *tag_p,
        const unsigned char *c, unsigned long long clen,
        const unsigned char *ad, unsigned long long adlen)
    void crypto_secretstream_xchacha20poly1305_rekey(
        crypto_secretstream_xchacha20poly1305_state *state)
