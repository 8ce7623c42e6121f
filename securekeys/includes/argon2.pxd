# The Argon2 reference library's declarations, as in argon2.h (20171227 and
# later: Debian's libargon2-dev, pkg-config libargon2).
#
# securekeys runs Argon2id through argon2_ctx() rather than libsodium's
# crypto_pwhash() for one reason: argon2_ctx() takes an allocator for its
# working memory, so that memory can be guarded memory.  Only what that needs
# is declared.  Plain extern declarations without `except` clauses: every
# return code is checked by the caller.  Cimport this module as a namespace:
# `from securekeys.includes cimport argon2` ... `argon2.argon2_ctx(&ctx, ...)`.

from libc.stdint cimport uint8_t, uint32_t

cdef extern from "argon2.h" nogil:
    ctypedef enum argon2_type:
        Argon2_d
        Argon2_i
        Argon2_id

    ctypedef enum argon2_version:
        ARGON2_VERSION_10
        ARGON2_VERSION_13

    # Every value argon2_ctx() can return.
    ctypedef enum argon2_error_codes:
        ARGON2_OK
        ARGON2_OUTPUT_PTR_NULL
        ARGON2_OUTPUT_TOO_SHORT
        ARGON2_OUTPUT_TOO_LONG
        ARGON2_PWD_TOO_SHORT
        ARGON2_PWD_TOO_LONG
        ARGON2_SALT_TOO_SHORT
        ARGON2_SALT_TOO_LONG
        ARGON2_AD_TOO_SHORT
        ARGON2_AD_TOO_LONG
        ARGON2_SECRET_TOO_SHORT
        ARGON2_SECRET_TOO_LONG
        ARGON2_TIME_TOO_SMALL
        ARGON2_TIME_TOO_LARGE
        ARGON2_MEMORY_TOO_LITTLE
        ARGON2_MEMORY_TOO_MUCH
        ARGON2_LANES_TOO_FEW
        ARGON2_LANES_TOO_MANY
        ARGON2_PWD_PTR_MISMATCH
        ARGON2_SALT_PTR_MISMATCH
        ARGON2_SECRET_PTR_MISMATCH
        ARGON2_AD_PTR_MISMATCH
        ARGON2_MEMORY_ALLOCATION_ERROR
        ARGON2_FREE_MEMORY_CBK_NULL
        ARGON2_ALLOCATE_MEMORY_CBK_NULL
        ARGON2_INCORRECT_PARAMETER
        ARGON2_INCORRECT_TYPE
        ARGON2_OUT_PTR_MISMATCH
        ARGON2_THREADS_TOO_FEW
        ARGON2_THREADS_TOO_MANY
        ARGON2_MISSING_ARGS
        ARGON2_ENCODING_FAIL
        ARGON2_DECODING_FAIL
        ARGON2_THREAD_FAIL
        ARGON2_DECODING_LENGTH_FAIL
        ARGON2_VERIFY_MISMATCH

    # flags: ARGON2_DEFAULT_FLAGS (0) leaves the password and the secret as
    # they were; ARGON2_FLAG_CLEAR_PASSWORD would make Argon2 write to them.
    uint32_t ARGON2_DEFAULT_FLAGS
    uint32_t ARGON2_FLAG_CLEAR_PASSWORD
    uint32_t ARGON2_FLAG_CLEAR_SECRET
    uint32_t ARGON2_SYNC_POINTS

    # The allocator of the working memory.  The library ignores the int
    # returned: a failure is `*memory` left NULL.
    ctypedef int (*allocate_fptr)(uint8_t **memory, size_t bytes_to_allocate)
    ctypedef void (*deallocate_fptr)(uint8_t *memory, size_t bytes_to_allocate)

    ctypedef struct argon2_context:
        uint8_t *out
        uint32_t outlen
        uint8_t *pwd
        uint32_t pwdlen
        uint8_t *salt
        uint32_t saltlen
        uint8_t *secret
        uint32_t secretlen
        uint8_t *ad
        uint32_t adlen
        uint32_t t_cost          # passes
        uint32_t m_cost          # KiB
        uint32_t lanes
        uint32_t threads
        uint32_t version
        allocate_fptr allocate_cbk
        deallocate_fptr free_cbk
        uint32_t flags

    int argon2_ctx(argon2_context *context, argon2_type type)
    const char *argon2_error_message(int error_code)
