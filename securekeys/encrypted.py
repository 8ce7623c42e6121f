"""Encrypted key files (format version 1): a key at rest under a passphrase
or a key-encryption key (KEK), decrypted straight into guarded memory.

The format is simple enough to decode with libsodium alone (the README shows
how).  All integers little-endian; the whole 72-byte header is the AEAD's
additional data:

    offset size field
         0    8 magic b"SKEYENC1" (the final "1" is the format version)
         8    1 KEK kind: 0x01 passphrase (Argon2id), 0x02 a 32-byte key
         9    7 reserved, all zero
        16    8 Argon2id opslimit (u64; 0 for kind 0x02)
        24    8 Argon2id memlimit in bytes (u64; 0 for kind 0x02)
        32   16 salt (random for kind 0x01; all zero for kind 0x02)
        48   24 XChaCha20-Poly1305-IETF nonce (random)
        72 size+16 the key's ciphertext, then its 16-byte tag

Kind 0x01: KEK = crypto_pwhash(32, passphrase, salt, opslimit, memlimit,
ALG_ARGON2ID13), in guarded memory, destroyed after use; kind 0x02: the KEK
is the 32-byte key itself.  Everything in the header is checked before any
Argon2 work, so a hostile file cannot make us allocate more than
MEMLIMIT_SENSITIVE bytes or spend more than OPSLIMIT_SENSITIVE passes.

Only public bytes (the header, the ciphertext) are ever in `bytes` here; the
key goes from guarded memory into libsodium and from libsodium into guarded
memory, and so does the KEK.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import NamedTuple

from securekeys._memory import SecureBuffer, SecureKey
from securekeys.crypto import (
    AEAD_KEY_BYTES,
    AEAD_NONCE_BYTES,
    AEAD_TAG_BYTES,
    MEMLIMIT_MIN,
    MEMLIMIT_SENSITIVE,
    OPSLIMIT_MIN,
    OPSLIMIT_SENSITIVE,
    PWHASH_SALT_BYTES,
    _aead_decrypt_key,
    aead_encrypt,
    password_key,
)
from securekeys.errors import KeyFileError

__all__ = ["HEADER_BYTES", "KEK", "MAGIC", "OVERHEAD_BYTES", "PASSPHRASE", "Header", "check_limits",
           "check_secret", "decrypt_key", "encrypt_key", "is_encrypted", "parse_header"]

MAGIC = b"SKEYENC1"
_MAGIC_STEM = MAGIC[:-1]   # "SKEYENC": the same format family, another version
PASSPHRASE = 0x01
KEK = 0x02
_KINDS = {PASSPHRASE: "a passphrase", KEK: "a key-encryption key"}
# magic, kind, reserved, opslimit, memlimit, salt, nonce
_HEADER = struct.Struct("<8sB7sQQ16s24s")
HEADER_BYTES = _HEADER.size                      # 72
OVERHEAD_BYTES = HEADER_BYTES + AEAD_TAG_BYTES   # 88: a file is size + 88 bytes
_NO_SALT = bytes(PWHASH_SALT_BYTES)
_RESERVED = bytes(7)
assert HEADER_BYTES == 72 and len(_NO_SALT) == 16


class Header(NamedTuple):
    """A version-1 header that passed every check."""
    kind: int
    opslimit: int
    memlimit: int
    salt: bytes
    nonce: bytes
    raw: bytes   # the 72 bytes, the AEAD's additional data


def check_secret(passphrase: object, kek: object) -> int:
    """Which kind the caller asked for: PASSPHRASE, KEK, or 0 for neither.
    Both is ValueError; a passphrase that is not a SecureBuffer (bytes or
    str would sit in the heap) or a KEK that is not a 32-byte SecureBuffer is
    TypeError / ValueError."""
    if passphrase is not None and kek is not None:
        raise ValueError("pass passphrase= or kek=, not both: a key file is encrypted under one of them")
    if passphrase is not None:
        if not isinstance(passphrase, SecureBuffer):
            raise TypeError(f"passphrase must be a SecureBuffer (from securekeys.crypto.read_password()), "
                            f"not {type(passphrase).__name__}: a str or bytes passphrase stays in the heap")
        _touch(passphrase)
        return PASSPHRASE
    if kek is not None:
        if not isinstance(kek, SecureBuffer):
            raise TypeError(f"kek must be a {AEAD_KEY_BYTES}-byte SecureKey (from read_key, read_credential "
                            f"or create_key), not {type(kek).__name__}")
        if kek.size != AEAD_KEY_BYTES:
            raise ValueError(f"kek must be {AEAD_KEY_BYTES} bytes, not {kek.size}")
        _touch(kek)
        return KEK
    return 0


def _touch(secret: SecureBuffer) -> None:
    # Borrowed and returned at once: a destroyed passphrase or KEK is fatal
    # here, before any file is opened or written, as a destroyed key is.
    with secret.reading():
        pass


def check_limits(opslimit: object, memlimit: object) -> None:
    """The Argon2id limits a file may carry: ValueError outside
    [OPSLIMIT_MIN, OPSLIMIT_SENSITIVE] / [MEMLIMIT_MIN, MEMLIMIT_SENSITIVE]."""
    for name, value, low, high in (("opslimit", opslimit, OPSLIMIT_MIN, OPSLIMIT_SENSITIVE),
                                   ("memlimit", memlimit, MEMLIMIT_MIN, MEMLIMIT_SENSITIVE)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high} ({name.upper()}_MIN and "
                             f"{name.upper()}_SENSITIVE, the limits an encrypted key file may carry), not {value}")


def encrypt_key(key: SecureBuffer, kind: int, secret: SecureBuffer, opslimit: int, memlimit: int) -> bytes:
    """The whole file for `key` under `secret` (a passphrase or a KEK, as
    `kind` says): header, ciphertext, tag.  Public bytes only."""
    if kind == PASSPHRASE:
        check_limits(opslimit, memlimit)
        salt = os.urandom(PWHASH_SALT_BYTES)
    else:
        opslimit, memlimit, salt = 0, 0, _NO_SALT
    header = _HEADER.pack(MAGIC, kind, _RESERVED, opslimit, memlimit, salt, os.urandom(AEAD_NONCE_BYTES))
    nonce = header[48:72]
    kek = _kek(kind, secret, salt, opslimit, memlimit)
    try:
        return header + aead_encrypt(kek, key, nonce, header)
    finally:
        if kek is not secret:
            kek.destroy()


def is_encrypted(buffer: SecureBuffer) -> bool:
    """Whether guarded memory holding a file's first bytes starts with this
    format's magic (any version).  Read in place: the bytes may be a key."""
    with buffer.reading() as view:
        return view.nbytes >= len(_MAGIC_STEM) and view[:len(_MAGIC_STEM)] == _MAGIC_STEM


def parse_header(data: bytes, kind: int, path: str | bytes) -> Header:
    """The checked header of an encrypted key file's contents; KeyFileError
    naming what is wrong, before any Argon2 work.  `kind` is what the caller
    brought (PASSPHRASE or KEK)."""
    def refuse(why: str) -> KeyFileError:
        return KeyFileError(errno.EINVAL, f"not a valid encrypted key file: {why}", path)

    if len(data) < OVERHEAD_BYTES:
        raise refuse(f"{len(data)} bytes, shorter than the {OVERHEAD_BYTES} of a header and a tag")
    magic, file_kind, reserved, opslimit, memlimit, salt, nonce = _HEADER.unpack_from(data)
    if magic[:7] != _MAGIC_STEM:
        raise refuse("it does not start with SKEYENC1 (a plain key file? read it without passphrase= or kek=)")
    if magic != MAGIC:
        raise refuse(f"format version {magic[7:]!r}; this securekeys reads version 1 (b'1')")
    if file_kind not in _KINDS:
        raise refuse(f"unknown KEK kind 0x{file_kind:02x} (0x01 passphrase, 0x02 key-encryption key)")
    if reserved != _RESERVED:
        raise refuse(f"reserved byte {9 + next(i for i, b in enumerate(reserved) if b)} is not zero")
    if file_kind == PASSPHRASE:
        if not OPSLIMIT_MIN <= opslimit <= OPSLIMIT_SENSITIVE:
            raise refuse(f"Argon2id opslimit {opslimit} is outside [{OPSLIMIT_MIN}, {OPSLIMIT_SENSITIVE}]")
        if not MEMLIMIT_MIN <= memlimit <= MEMLIMIT_SENSITIVE:
            raise refuse(f"Argon2id memlimit {memlimit} is outside [{MEMLIMIT_MIN}, {MEMLIMIT_SENSITIVE}]")
    elif opslimit or memlimit or salt != _NO_SALT:
        raise refuse("a key-encryption-key file must have zero Argon2id limits and an all-zero salt")
    if file_kind != kind:
        raise KeyFileError(errno.EINVAL, f"encrypted under {_KINDS[file_kind]}: pass "
                           f"{'passphrase=' if file_kind == PASSPHRASE else 'kek='}, not "
                           f"{'passphrase=' if kind == PASSPHRASE else 'kek='}", path)
    return Header(file_kind, opslimit, memlimit, salt, nonce, data[:HEADER_BYTES])


def decrypt_key(data: bytes, header: Header, secret: SecureBuffer, key: SecureKey) -> None:
    """Decrypt the key in `data` (a file's contents, its header checked)
    straight into `key` (new, READWRITE, exactly the key's size), which is
    sealed READONLY; on any error `key` is destroyed.  DecryptionError for a
    wrong passphrase or KEK, or any changed byte."""
    try:
        kek = _kek(header.kind, secret, header.salt, header.opslimit, header.memlimit)
    except BaseException:
        key.destroy()
        raise
    try:
        _aead_decrypt_key(kek, data[HEADER_BYTES:], header.nonce, header.raw, key)
    finally:
        if kek is not secret:
            kek.destroy()


def _kek(kind: int, secret: SecureBuffer, salt: bytes, opslimit: int, memlimit: int) -> SecureBuffer:
    if kind == KEK:
        return secret
    return password_key(secret, salt, AEAD_KEY_BYTES, opslimit=opslimit, memlimit=memlimit)
