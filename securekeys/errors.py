"""The exceptions securekeys raises for bad input (misuse is fatal instead)."""

from __future__ import annotations

__all__ = ["DecryptionError", "EncryptedKeyFileError", "KeyDestroyedError", "KeyFileError", "LockError",
           "SecurityWarning"]


class DecryptionError(ValueError):
    """The ciphertext, nonce, AAD or key do not authenticate: the message was
    forged, corrupted, truncated, or is decrypted with the wrong key."""


class KeyFileError(OSError):
    """A key file exists but is unsafe or malformed: wrong kind, owner,
    permissions or size.  ``filename`` names the file."""


class EncryptedKeyFileError(KeyFileError):
    """A plain read_key met an encrypted key file: it needs passphrase= or
    kek= (a program may catch this to ask for the passphrase)."""


class KeyDestroyedError(RuntimeError):
    """A call's key (or another secure buffer it was using) was wiped while
    the call ran, by wipe_all(), KeyRing.destroy() or, for a buffer being
    filled, destroy().  The call failed and wiped what it had produced: no
    result is ever made from a partly wiped key."""


class LockError(MemoryError):
    """Guarded memory could not be mlocked and the lock policy is "require"."""


class SecurityWarning(UserWarning):
    """A protection securekeys wanted could not be had (lock policy "warn")."""
