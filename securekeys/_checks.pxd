# Internal helpers, cimported by securekeys' own extension modules only.
#
# Everything here is `cdef inline`: each module that cimports this file
# compiles its own copy, so nothing here is part of any module's ABI (the
# model is pyzmq's checkrc.pxd).  One helper per kind of failure:
#   raise_errno()   a failed libc/system call (its errno) -> an exception;
#   sodium_failed() a failed libsodium call -> an exception.
from libc.errno cimport ENOMEM
from libc.string cimport strerror

# What a failed libsodium call means.
cdef enum:
    SODIUM_INTERNAL = 0    # cannot fail with valid arguments: a bug or a broken libsodium
    SODIUM_FORGED = 1      # authentication failed
    SODIUM_NO_MEMORY = 2   # libsodium could not allocate (Argon2)


cdef inline int raise_errno(str what, int err) except -1:
    message = f"{what}: {strerror(err).decode('utf-8', 'replace')}"
    if err == ENOMEM:
        raise MemoryError(message)
    raise OSError(err, message)


cdef inline int sodium_failed(const char *call, int failure) except -1:
    from securekeys.errors import DecryptionError
    if failure == SODIUM_FORGED:
        raise DecryptionError("decryption failed: the ciphertext, nonce or AAD was "
                              "forged or corrupted, or the key is wrong")
    name = call.decode("ascii")
    if failure == SODIUM_NO_MEMORY:
        raise MemoryError(f"{name}() failed: not enough memory for these limits")
    raise RuntimeError(f"libsodium {name}() failed unexpectedly")


cdef inline int check_sodium(int rc, const char *call, int failure) except -1:
    # The one place a libsodium return code is looked at.
    if rc != 0:
        return sodium_failed(call, failure)
    return 0
