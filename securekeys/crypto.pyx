# cython: language_level=3, embedsignature=True, auto_pickle=False
"""libsodium operations that run on keys in place, in guarded memory.

Keys are ``SecureBuffer`` / ``SecureKey`` objects only; ``bytes`` keys raise
``TypeError``.  A key is *borrowed* for the length of one call (the counted
borrow of ``securekeys._memory``): a NOACCESS key is readable during the call
and NOACCESS again afterwards; a destroyed key ends the process.

Public inputs (messages, nonces, AAD, ciphertexts, public keys, signatures)
are any bytes-like object and are read in place, without a copy.  A
``SecureBuffer`` is accepted there too (it is borrowed like a key), so that a
secret can be encrypted or MACed without leaving guarded memory.  The one
exception: an input one call reads more than once -- by libsodium, or by our
own check-then-decrypt passes -- is snapshotted first unless it is ``bytes``
(or a memoryview of ``bytes``), so that a buffer changing during the call
(another thread, another process sharing the memory, a key destroyed by
another thread) cannot make the answer belong to bytes nobody gave -- a
forged plaintext, a forged signature accepted, session keys the peer does not
share, or one nonce for two messages.  Those inputs are: the ciphertext of
aead_decrypt, decrypt, box_seal_open and a stream's pull; the ciphertext,
nonce and AAD of aead_decrypt_into and decrypt_into; the message of sign; the
signature and public key of verify; the tag of mac_verify; the public key of
box_seal; the peer's public key of kx_*_session_keys.  A snapshot of guarded
bytes (a SecureBuffer, or a memoryview or slice of one) is guarded memory;
any other snapshot is wiped before it is freed.

Secret outputs (plaintexts, derived keys, secret keys of key pairs, session
keys) are written by libsodium straight into new guarded memory and returned
READONLY, or by the *_into functions into a caller's writable SecureBuffer.
A secretstream's state is guarded memory too, wiped when the stream closes.  Public
outputs (ciphertexts, tags, hashes, signatures, public keys) are ``bytes``.

The same operations are ``cdef`` functions for Cython code (crypto.pxd,
``from securekeys.crypto cimport ...``); the functions here call them.
``read_password`` lives in ``securekeys.terminal`` and is re-exported here.

No copy of a key or secret result is left on the stack: after each libsodium
call the runner zeroes the stack the call used and the registers it may have
left secrets in.
"""

from typing import NamedTuple

from cpython.buffer cimport PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_RawMalloc, PyMem_RawFree
from cpython.memoryview cimport PyMemoryView_Check, PyMemoryView_GET_BUFFER
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_INCREF, Py_DECREF
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy, memset

from securekeys._checks cimport SODIUM_INTERNAL, SODIUM_FORGED, SODIUM_NO_MEMORY, sodium_failed
from securekeys._memory cimport SecureBuffer, SecureKey, SK_DESTROYED
from securekeys._wipe cimport wipe_stack_and_registers
from securekeys.includes cimport argon2, sodium

from securekeys.errors import DecryptionError, KeyDestroyedError
from securekeys.terminal import PASSWORD_MAX_BYTES, read_password


# Bottom up: each file uses only the files above it.  An operation is
# "validate, fill the call's arguments, run"; adding a libsodium family means
# adding one file below the runner.
include "crypto_args.pxi"       # checking keys, sizes and ints before anything is borrowed
include "crypto_runner.pxi"     # the one runner: borrow the key, maybe drop the GIL, call, wipe, release
include "crypto_inputs.pxi"     # public inputs in place, or a snapshot when a call reads them twice
include "crypto_aead.pxi"       # XChaCha20-Poly1305-IETF
include "crypto_secretbox.pxi"  # encrypt/decrypt: the AEAD with a random nonce in front
include "crypto_kdf.pxi"        # crypto_kdf subkeys (BLAKE2b)
include "crypto_auth.pxi"       # HMAC-SHA-512-256 and keyed BLAKE2b
include "crypto_sign.pxi"       # Ed25519
include "crypto_pwhash.pxi"     # Argon2id (the reference library), its working memory guarded
include "crypto_kx.pxi"         # X25519 key exchange: session keys
include "crypto_box.pxi"        # sealed boxes: encryption to a public key
include "crypto_stream.pxi"     # secretstream: StreamEncryptor / StreamDecryptor
