"""Key files: read straight into guarded memory, written 0400 atomically.

Pure Python over `SecureBuffer.readinto`, the text codecs of `_memory` and
os-level calls: no buffered file object, `bytes`, `bytearray` or `str` ever
holds key bytes, raw or as text.  Every check of the file runs on the open
file descriptor (no check-then-open race); the rules are in trust.py.
"""

from __future__ import annotations

import errno
import os

from securekeys._memory import (
    SecureBuffer,
    SecureKey,
    _at_eof,
    _decode_text,
    _read_key_strict,
    _starts_encrypted,
    _text_lengths,
)
from securekeys.encrypted import (
    OVERHEAD_BYTES,
    PASSPHRASE,
    Header,
    check_secret,
    decrypt_key,
    is_encrypted,
    parse_header,
)
from securekeys.errors import DecryptionError, EncryptedKeyFileError, KeyDestroyedError, KeyFileError
from securekeys.trust import (
    Encoding,
    Trust,
    WrongSizeError,
    check_key_file,
    check_options,
    octal_mode,
    text_length_words,
)
from securekeys.lookup import _open_beneath, _open_key_file
from securekeys.writing import write_key

__all__ = ["check_key_file", "octal_mode", "read_credential", "read_key", "write_key"]  # write_key: securekeys/writing.py

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]
_CREDENTIALS = "CREDENTIALS_DIRECTORY"

def read_key(path: StrOrBytesPath, size: int, *, trust: Trust = "strict", encoding: Encoding = "raw",
             beneath: StrOrBytesPath | None = None, passphrase: SecureBuffer | None = None,
             kek: SecureBuffer | None = None) -> SecureKey:
    """Read a `size`-byte key file straight into guarded memory; READONLY.

    The file must pass check_key_file(): a regular file with one hard link,
    owned and permitted as `trust` allows ("strict": by this process's
    effective uid, no group/other permission bits; "root-managed" and
    "systemd" also accept what root delivers for those), holding exactly
    `size` bytes, or `size` bytes in `encoding` ("hex", "base64",
    "base64url": one trailing newline allowed, nothing else).  Symlinks are
    refused, and so are links in its directories owned by neither root nor
    this uid.  With `beneath=DIR`, `path` is relative to DIR and resolved
    inside it: links that stay inside are followed (Kubernetes' ..data),
    nothing leads out.  Otherwise KeyFileError (an OSError) names the path
    and why; a missing file is FileNotFoundError; an unknown `trust` or
    `encoding` is ValueError.  Nothing is left behind on error.

    With `passphrase` (a SecureBuffer, e.g. from crypto.read_password()) or
    `kek` (a 32-byte SecureKey), the file is an encrypted key file
    (securekeys.encrypted; `size` + 88 bytes, the same file checks) and the
    key is decrypted straight into guarded memory.  A wrong passphrase or
    KEK, or any changed byte, is DecryptionError; a malformed header is
    KeyFileError naming what is wrong, before any Argon2 work.
    """
    kind = check_secret(passphrase, kek)
    if kind and encoding != "raw":
        raise ValueError(f"encoding={encoding!r} is for plain key files: an encrypted key file is binary")
    key = SecureKey(size)   # checks `size` before anything touches the disk
    if kind:
        secret = passphrase if passphrase is not None else kek
        assert secret is not None
        fill_key_from_encrypted_file(key, path, trust, beneath, kind, secret)
        return key
    if trust == "strict" and encoding == "raw" and beneath is None and _read_key_strict(key, path):
        return key   # the plain case, in one C function; anything else: every check again
    fill_key_from_file(key, path, trust, encoding, beneath)
    return key


def _open_checked(path: StrOrBytesPath, size: int, trust: Trust, encoding: Encoding,
                  beneath: StrOrBytesPath | None, encrypted: bool) -> tuple[int, os.stat_result, str | bytes]:
    """Open a key file and check it (check_key_file); the open fd, its
    verified fstat and the path errors name.  On error nothing stays open."""
    path = os.fspath(path)  # errors name the path as the os module does
    if trust != "strict" or encoding != "raw":
        check_options(trust, encoding)
    if beneath is None:
        fd, without_links = _open_key_file(path)
    else:
        fd, path = _open_beneath(beneath, path)
        without_links = True   # the kernel kept every link inside `beneath`
    try:
        st = check_key_file(fd, path, size, trust, encoding, without_links, encrypted=encrypted)
    except WrongSizeError:
        try:
            _refuse_wrong_size(fd, path, size, encoding, encrypted)   # raises when it can say more
        finally:
            os.close(fd)
        raise
    except BaseException:
        os.close(fd)
        raise
    return fd, st, path


def _refuse_wrong_size(fd: int, path: str | bytes, size: int, encoding: Encoding, encrypted: bool) -> None:
    """For a file of the wrong size (raw or text): raise the refusal that
    says which kind of file it is, when its first bytes say more than its
    length; return to let the wrong-size error stand.  The magic is read
    into wiped C memory (_starts_encrypted): the bytes may be a key's."""
    length = os.fstat(fd).st_size
    if _starts_encrypted(fd):
        # No local names the new exception: its traceback holds this frame.
        if not encrypted or length <= OVERHEAD_BYTES:
            raise _encrypted_refusal(path, length, size, encoding) from None
        inside = length - OVERHEAD_BYTES
        raise KeyFileError(errno.EINVAL, f"wrong size: an encrypted key file of a {size}-byte key has "
                           f"{size + OVERHEAD_BYTES} bytes, this one {length}: the size of an encrypted "
                           f"{inside}-byte key (pass size={inside} if that is what it holds)", path) from None
    if encrypted and length == size:
        raise KeyFileError(errno.EINVAL, f"a plain {size}-byte key file, not an encrypted one: "
                           "read it without passphrase= or kek=", path) from None


def _encrypted_refusal(path: str | bytes, length: int, size: int, encoding: Encoding) -> KeyFileError:
    """The refusal of a `length`-byte file that starts with SKEYENC, met by
    a read of a `size`-byte key in `encoding` (or an encrypted read, for a
    truncated one).  A plain key file never starts with SKEYENC, at any
    length of 7 bytes or more: one that does is an encrypted key file,
    whole or not."""
    if length <= OVERHEAD_BYTES:
        # KeyFileError, not EncryptedKeyFileError: that one tells a program
        # to ask for the passphrase, and none can read what is left.
        return KeyFileError(errno.EINVAL, f"a truncated encrypted key file: it starts with SKEYENC, but "
                            f"{length} bytes are fewer than the {OVERHEAD_BYTES + 1} of a header, a 1-byte key "
                            "and a tag, and no passphrase or key-encryption key can read it: restore it "
                            "from a copy", path)
    inside = length - OVERHEAD_BYTES
    fix = "pass passphrase= or kek="
    if inside != size:
        fix += f", and size={inside}"
    if encoding != "raw":
        fix += ", without encoding="
    return EncryptedKeyFileError(errno.EINVAL, "an encrypted key file (it starts with SKEYENC) of a "
                                 f"{inside}-byte key if it is whole: {fix}", path)


def _refuse_encrypted(key: SecureKey, path: str | bytes) -> None:
    """After a plain read of a file of the key's size: a key that starts
    with SKEYENC is an encrypted key file, refused (read_key's C path
    leaves such a file to this one).  Looked at in place."""
    if is_encrypted(key):   # False below 7 bytes: a short key is never taken for the magic
        raise _encrypted_refusal(path, key.size, key.size, "raw")


def _still_ours(key: SecureKey) -> None:
    """After a step that released the GIL (the end-of-file probe, a text
    read): another thread's wipe_all() or KeyRing.destroy() may have taken
    the key meanwhile, which is a failed read, not misuse."""
    if key.destroyed:
        raise KeyDestroyedError("read_key(): the key was destroyed (wipe_all() or KeyRing.destroy()) "
                                "while it was being read")


# The options go by position on the way in: a call with keywords costs more,
# and every read pays it, the default ones too.
def fill_key_from_file(key: SecureKey, path: StrOrBytesPath, trust: Trust = "strict",
                       encoding: Encoding = "raw", beneath: StrOrBytesPath | None = None) -> os.stat_result:
    """Fill a new (READWRITE) key from a key file with every read_key check
    and seal it READONLY; return the verified fstat of the open file.  On any
    error, destroy the key and raise."""
    size = key.size
    fd = -1
    try:
        fd, st, path = _open_checked(path, size, trust, encoding, beneath, False)
        if encoding != "raw":
            _read_text(key, fd, st, path, encoding)
            _still_ours(key)
            key.readonly()
            return st
        try:
            got = key.readinto(fd)
            complete = got == size and _at_eof(fd)
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None
        if not complete:
            actual = got if got < size else "more"
            raise KeyFileError(errno.EINVAL, f"wrong size: expected {size} bytes, read {actual} (the file changed)", path)
        _still_ours(key)
        _refuse_encrypted(key, path)
        key.readonly()
        return st
    except BaseException:
        key.destroy()
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def fill_key_from_encrypted_file(key: SecureKey, path: StrOrBytesPath, trust: Trust,
                                 beneath: StrOrBytesPath | None, kind: int,
                                 secret: SecureBuffer) -> tuple[os.stat_result, Header]:
    """Fill a new (READWRITE) key from an encrypted key file, checked as
    read_key checks a plain one, and seal it READONLY; return the verified
    fstat of the open file and the file's header.  On any error, destroy
    the key and raise."""
    fd = -1
    try:
        fd, st, path = _open_checked(path, key.size, trust, "raw", beneath, True)
        # In guarded memory until the magic says it is an encrypted file: a
        # plain key of another size must not reach the heap.
        contents = _read_whole(fd, st, path)
        try:
            if not is_encrypted(contents):
                raise KeyFileError(errno.EINVAL, "not an encrypted key file: it does not start with SKEYENC1 "
                                   "(a plain key file? read it without passphrase= or kek=)", path)
            with contents.reading() as view:
                data = bytes(view)   # header, ciphertext and tag: public from here on
        finally:
            contents.destroy()
        header = parse_header(data, kind, path)
    except BaseException:
        key.destroy()
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        decrypt_key(data, header, secret, key)   # destroys the key on error
    except DecryptionError:
        what = "passphrase" if kind == PASSPHRASE else "key-encryption key"
        raise DecryptionError(f"cannot decrypt the key file {os.fsdecode(path)!r}: a wrong {what}, "
                              "or the file was changed (every byte is authenticated)") from None
    return st, header


def _read_whole(fd: int, st: os.stat_result, path: str | bytes) -> SecureBuffer:
    """The whole checked file (`st` its fstat) in new guarded scratch memory,
    end of file proven; nothing left on error.  What it holds may be a key."""
    contents = SecureBuffer(st.st_size)
    try:
        try:
            complete = contents.readinto(fd) == st.st_size and _at_eof(fd)
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None
        if not complete:
            raise KeyFileError(errno.EINVAL, "the file changed while it was read: try again", path)
    except BaseException:
        contents.destroy()
        raise
    return contents


def _read_text(key: SecureKey, fd: int, st: os.stat_result, path: str | bytes, encoding: Encoding) -> None:
    """Read the text (its length bounded by check_key_file) into guarded
    scratch memory and decode it into `key`; the scratch is wiped whatever
    happens."""
    text = _read_whole(fd, st, path)
    try:
        if is_encrypted(text):   # 120 bytes is also the hex of a 60-byte key, the base64 of a 90-byte one
            raise _encrypted_refusal(path, text.size, key.size, encoding)
        verdict, number = _decode_text(key, text, text.size, encoding)
    finally:
        text.destroy()
    if verdict != "ok":
        raise KeyFileError(errno.EINVAL, _text_refusal(verdict, number, key.size, encoding), path)


_ALPHABETS = {"base64": "A-Z a-z 0-9 + /", "base64url": "A-Z a-z 0-9 - _"}


def _text_refusal(verdict: str, number: int, size: int, encoding: str) -> str:
    """What is wrong with a text key, without a word of its content."""
    if verdict == "length":
        return (f"wrong size: a {size}-byte key in {encoding} is {text_length_words(size, encoding)}, "
                f"the text has {number} (one newline may end it, nothing else)")
    if verdict == "invalid" and encoding == "hex":
        return (f"not valid hex: characters {number}-{number + 1} are not two hex digits "
                "(0-9, a-f, A-F; no spaces or line breaks inside the key)")
    if verdict == "invalid":
        return (f"not valid {encoding}: character {number} is not in its alphabet ({_ALPHABETS[encoding]}), "
                "or is padding before the end (no spaces or line breaks inside the key)")
    if verdict == "alphabet":
        other = "base64url" if encoding == "base64" else "base64"
        return f"not valid {encoding}, but valid {other}: pass encoding=\"{other}\""
    if verdict == "padding":
        padded, unpadded = _text_lengths(size, encoding)
        return (f"not valid {encoding}: character {number} should be \"=\": a {size}-byte key of {padded} "
                f"characters ends in {padded - unpadded} \"=\" of padding")
    return (f"not valid {encoding}: its last character holds bits beyond a {size}-byte key "
            "(the text is damaged, or is not this key)")


def read_credential(name: str | bytes, size: int, *, encoding: Encoding = "raw") -> SecureKey:
    """Read the systemd credential `name` (LoadCredential=,
    LoadCredentialEncrypted=, SetCredential=) into guarded memory, READONLY:
    read_key(name, size, trust="systemd", encoding=encoding,
    beneath=$CREDENTIALS_DIRECTORY).  A name with "/", ".", ".." or nothing
    (or a NUL byte) is ValueError; KeyFileError when the variable is not set."""
    if not isinstance(name, (str, bytes)):
        raise TypeError(f"a credential name is a str, not {type(name).__name__}")
    if os.fsencode(name) in (b"", b".", b"..") or b"/" in os.fsencode(name) or b"\0" in os.fsencode(name):
        raise ValueError(f"not a credential name: {name!r} (a file name: no '/', not '.' or '..')")
    check_options("systemd", encoding)
    directory = os.environ.get(_CREDENTIALS)
    if not directory:
        raise KeyFileError(errno.ENOENT, f"${_CREDENTIALS} is not set: this process was not started by "
                           "systemd with LoadCredential=, LoadCredentialEncrypted= or SetCredential=", name)
    return read_key(name, size, trust="systemd", encoding=encoding, beneath=directory)
