# Password hashing (included by crypto.pyx): Argon2id (crypto_pwhash,
# ALG_ARGON2ID13) stretches a password in guarded memory into a key.

PWHASH_SALT_BYTES = sodium.crypto_pwhash_SALTBYTES
OPSLIMIT_MIN = sodium.crypto_pwhash_OPSLIMIT_MIN
OPSLIMIT_INTERACTIVE = sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE
OPSLIMIT_MODERATE = sodium.crypto_pwhash_OPSLIMIT_MODERATE
OPSLIMIT_SENSITIVE = sodium.crypto_pwhash_OPSLIMIT_SENSITIVE
OPSLIMIT_MAX = sodium.crypto_pwhash_OPSLIMIT_MAX
MEMLIMIT_MIN = sodium.crypto_pwhash_MEMLIMIT_MIN
MEMLIMIT_INTERACTIVE = sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE
MEMLIMIT_MODERATE = sodium.crypto_pwhash_MEMLIMIT_MODERATE
MEMLIMIT_SENSITIVE = sodium.crypto_pwhash_MEMLIMIT_SENSITIVE
MEMLIMIT_MAX = sodium.crypto_pwhash_MEMLIMIT_MAX


cdef int _pwhash_call(_Args *a) noexcept nogil:
    # The "key" is the password.
    return sodium.crypto_pwhash(a.out, a.outlen, <const char *>a.key, a.keylen, a.salt,
                                a.opslimit, a.memlimit, sodium.crypto_pwhash_ALG_ARGON2ID13)


# Always without the GIL (Argon2 takes milliseconds to seconds); a failure is
# libsodium not getting `memlimit` bytes.
cdef _Op _PWHASH = _Op(call=_pwhash_call, name=b"crypto_pwhash",
                       failure=SODIUM_NO_MEMORY, heavy=True, stack=_STACK_ARGON2)


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
    cdef _Args a = _NO_ARGS
    a.opslimit = _int_in(opslimit, "opslimit", sodium.crypto_pwhash_OPSLIMIT_MIN,
                         sodium.crypto_pwhash_OPSLIMIT_MAX)
    a.memlimit = _int_in(memlimit, "memlimit", sodium.crypto_pwhash_MEMLIMIT_MIN,
                         sodium.crypto_pwhash_MEMLIMIT_MAX)
    if pw.nbytes() > sodium.crypto_pwhash_PASSWD_MAX:
        raise ValueError(f"password must be at most {sodium.crypto_pwhash_PASSWD_MAX} bytes long")
    cdef _In s = _NO_INPUT
    try:
        _input_fixed(salt, &s, "salt", sodium.crypto_pwhash_SALTBYTES, _READ_ONCE, NULL)   # hashed once
        a.salt = s.ptr
        return _run_into_new(&_PWHASH, &a, pw, SecureKey(n))
    finally:
        _release(&s)
