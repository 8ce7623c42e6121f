"""Encrypted key files (format SKEYENC1): written and read by the library,
checked against an independent decoder and encoder written here from the
format table alone (pysodium: struct + crypto_pwhash + XChaCha20-Poly1305)."""

from __future__ import annotations

import gc
import os
import struct
import time
from pathlib import Path

import pysodium
import pytest

from conftest import assert_dies, run_python
from test_crypto import secure
from test_crypto_stack import SCAN
from test_files import key_bytes, make_file, mappings, open_fds
from securekeys import EncryptedKeyFileError, KeyFileError, SecureBuffer, create_key, read_key, write_key
from securekeys import crypto
from securekeys._memory import live_buffers
from securekeys.crypto import DecryptionError

HEADER = struct.Struct("<8sB7sQQ16s24s")
OPS, MEM = crypto.OPSLIMIT_MIN, crypto.MEMLIMIT_MIN   # cheap Argon2 for tests
PASSPHRASE = b"correct horse battery staple"


def decode(path: Path, kek: bytes | None = None, passphrase: bytes | None = None) -> bytes:
    """The independent decoder: the format table, nothing of securekeys."""
    data = path.read_bytes()
    magic, kind, reserved, ops, mem, salt, nonce = HEADER.unpack_from(data)
    assert magic == b"SKEYENC1" and reserved == bytes(7)
    if kind == 0x01:
        assert passphrase is not None
        kek = pysodium.crypto_pwhash(32, passphrase, salt, ops, mem, pysodium.crypto_pwhash_ALG_ARGON2ID13)
    else:
        assert kind == 0x02 and ops == mem == 0 and salt == bytes(16)
    assert kek is not None
    plain: bytes = pysodium.crypto_aead_xchacha20poly1305_ietf_decrypt(data[72:], data[:72], nonce, kek)
    return plain


def encode(key: bytes, kind: int, secret: bytes, ops: int = OPS, mem: int = MEM,
           salt: bytes | None = None, reserved: bytes = bytes(7), magic: bytes = b"SKEYENC1") -> bytes:
    """The independent encoder: a whole file's contents."""
    if kind == 0x02:
        ops = mem = 0
    if kind == 0x01:
        salt = os.urandom(16) if salt is None else salt
        kek = pysodium.crypto_pwhash(32, secret, salt, ops, mem, pysodium.crypto_pwhash_ALG_ARGON2ID13)
    else:
        salt, kek = (bytes(16) if salt is None else salt), secret
    header = HEADER.pack(magic, kind, reserved, ops, mem, salt, os.urandom(24))
    ciphertext: bytes = pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(key, header, header[48:], kek)
    return header + ciphertext


@pytest.fixture
def kek() -> SecureBuffer:
    return create_key(32)


@pytest.fixture
def passphrase() -> SecureBuffer:
    return secure(PASSPHRASE)


# -- the library's files, decoded independently ---------------------------------------------

@pytest.mark.parametrize("size", [1, 32, 64, 4096])
def test_kek_file_is_the_format(private_dir: Path, kek: SecureBuffer, size: int) -> None:
    key = create_key(size)
    path = private_dir / "k.enc"
    write_key(path, key, kek=kek)
    st = path.stat()
    assert st.st_size == 72 + size + 16 and st.st_mode & 0o7777 == 0o400
    magic, kind, reserved, ops, mem, salt, nonce = HEADER.unpack_from(path.read_bytes())
    assert (magic, kind, reserved, ops, mem, salt) == (b"SKEYENC1", 2, bytes(7), 0, 0, bytes(16))
    assert decode(path, kek=key_bytes(kek)) == key_bytes(key)
    loaded = read_key(path, size, kek=kek)
    assert loaded == key and loaded.state.name == "READONLY" and type(loaded).__name__ == "SecureKey"


def test_passphrase_file_is_the_format(private_dir: Path, passphrase: SecureBuffer) -> None:
    key = create_key(32)
    path = private_dir / "k.enc"
    write_key(path, key, passphrase=passphrase, opslimit=OPS, memlimit=MEM)
    magic, kind, reserved, ops, mem, salt, nonce = HEADER.unpack_from(path.read_bytes())
    assert (magic, kind, reserved, ops, mem) == (b"SKEYENC1", 1, bytes(7), OPS, MEM)
    assert salt != bytes(16) and nonce != bytes(24)
    assert decode(path, passphrase=PASSPHRASE) == key_bytes(key)
    assert read_key(path, 32, passphrase=passphrase) == key


def test_salt_and_nonce_are_fresh_per_file(private_dir: Path, passphrase: SecureBuffer) -> None:
    key = create_key(32)
    headers = []
    for name in ("a", "b"):
        write_key(private_dir / name, key, passphrase=passphrase, opslimit=OPS, memlimit=MEM)
        headers.append(HEADER.unpack_from((private_dir / name).read_bytes()))
    assert headers[0][5] != headers[1][5] and headers[0][6] != headers[1][6]


def test_moderate_limits_by_default(private_dir: Path, passphrase: SecureBuffer) -> None:
    write_key(private_dir / "k.enc", create_key(32), passphrase=passphrase)
    _, _, _, ops, mem, _, _ = HEADER.unpack_from((private_dir / "k.enc").read_bytes())
    assert (ops, mem) == (crypto.OPSLIMIT_MODERATE, crypto.MEMLIMIT_MODERATE)
    assert (ops, mem) == (pysodium.crypto_pwhash_OPSLIMIT_MODERATE, pysodium.crypto_pwhash_MEMLIMIT_MODERATE)
    assert crypto.OPSLIMIT_SENSITIVE == pysodium.crypto_pwhash_OPSLIMIT_SENSITIVE
    assert crypto.MEMLIMIT_SENSITIVE == pysodium.crypto_pwhash_MEMLIMIT_SENSITIVE


def test_noaccess_key_and_kek_are_borrowed_and_returned(private_dir: Path, kek: SecureBuffer) -> None:
    key = create_key(32)
    key.noaccess()
    kek.noaccess()
    write_key(private_dir / "k.enc", key, kek=kek)
    loaded = read_key(private_dir / "k.enc", 32, kek=kek)
    assert key.state.name == "NOACCESS" and kek.state.name == "NOACCESS"
    assert loaded == key


# -- files encoded here, read by the library ------------------------------------------------

@pytest.mark.parametrize("kind", [1, 2])
def test_reads_independently_encoded_files(private_dir: Path, kind: int) -> None:
    key = os.urandom(48)
    secret = PASSPHRASE if kind == 1 else os.urandom(32)
    path = make_file(private_dir / "k.enc", encode(key, kind, secret))
    given = {"passphrase": secure(secret)} if kind == 1 else {"kek": secure(secret)}
    assert key_bytes(read_key(path, 48, **given)) == key   # type: ignore[arg-type]


def test_composes_with_beneath_and_trust(private_dir: Path, kek: SecureBuffer) -> None:
    (private_dir / "..data").mkdir()
    make_file(private_dir / "..data" / "k.enc", encode(b"k" * 32, 2, key_bytes(kek)))
    (private_dir / "k.enc").symlink_to("..data/k.enc")
    key = read_key("k.enc", 32, beneath=private_dir, trust="root-managed", kek=kek)
    assert key_bytes(key) == b"k" * 32
    os.chmod(private_dir / "..data" / "k.enc", 0o644)
    with pytest.raises(KeyFileError, match="permissions"):
        read_key("k.enc", 32, beneath=private_dir, kek=kek)


# -- refusals ----------------------------------------------------------------------------

def flipped(data: bytes, offset: int, bit: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ bit]) + data[offset + 1:]


def encoded_with_secret(kind: int) -> tuple[bytes, dict[str, SecureBuffer]]:
    """A good file of kind `kind` (encoded here) and read_key's keyword for its secret."""
    secret = PASSPHRASE if kind == 1 else os.urandom(32)
    given = {"passphrase": secure(secret)} if kind == 1 else {"kek": secure(secret)}
    gc.collect()
    return encode(b"s" * 32, kind, secret), given


@pytest.mark.parametrize("kind", [1, 2])
def test_every_header_byte_tampered_is_refused(private_dir: Path, kind: int) -> None:
    good, given = encoded_with_secret(kind)
    live = live_buffers()
    for offset in range(72):
        for bit in (0x01, 0x80):
            path = make_file(private_dir / f"{offset}-{bit}", flipped(good, offset, bit))
            with pytest.raises((KeyFileError, DecryptionError)):
                read_key(path, 32, **given)   # type: ignore[arg-type]
    gc.collect()
    assert live_buffers() == live


@pytest.mark.parametrize("kind", [1, 2])
def test_every_ciphertext_and_tag_byte_flipped_is_a_decryption_error(private_dir: Path, kind: int) -> None:
    good, given = encoded_with_secret(kind)
    live = live_buffers()
    for offset in range(72, len(good)):
        path = make_file(private_dir / str(offset), flipped(good, offset))
        with pytest.raises(DecryptionError, match="cannot decrypt the key file .*" + str(offset)):
            read_key(path, 32, **given)   # type: ignore[arg-type]
    gc.collect()
    assert live_buffers() == live


def test_wrong_passphrase_and_wrong_kek(private_dir: Path, passphrase: SecureBuffer, kek: SecureBuffer) -> None:
    key = create_key(32)
    write_key(private_dir / "p", key, passphrase=passphrase, opslimit=OPS, memlimit=MEM)
    write_key(private_dir / "k", key, kek=kek)
    with pytest.raises(DecryptionError, match="wrong passphrase"):
        read_key(private_dir / "p", 32, passphrase=secure(PASSPHRASE[:-1] + b"E"))
    with pytest.raises(DecryptionError, match="wrong key-encryption key"):
        read_key(private_dir / "k", 32, kek=create_key(32))


@pytest.mark.parametrize("field, header, words", [
    ("magic", dict(magic=b"SKEYENCX"), "format version"),
    ("magic", dict(magic=b"XKEYENC1"), "does not start with SKEYENC1"),
    ("version", dict(magic=b"SKEYENC2"), "format version b'2'"),
    ("kind", dict(kind=3), "unknown KEK kind 0x03"),
    ("kind", dict(kind=0), "unknown KEK kind 0x00"),
    ("reserved", dict(reserved=bytes(6) + b"\x01"), "reserved byte 15"),
    ("ops low", dict(ops=0), "opslimit 0"),
    ("ops high", dict(ops=crypto.OPSLIMIT_SENSITIVE + 1), f"opslimit {crypto.OPSLIMIT_SENSITIVE + 1}"),
    ("mem low", dict(mem=crypto.MEMLIMIT_MIN - 1), f"memlimit {crypto.MEMLIMIT_MIN - 1}"),
    ("mem high", dict(mem=crypto.MEMLIMIT_SENSITIVE + 1), f"memlimit {crypto.MEMLIMIT_SENSITIVE + 1}"),
    ("mem huge", dict(mem=2 ** 64 - 1), "memlimit 18446744073709551615"),
])
def test_malformed_header_is_named_before_any_argon2(private_dir: Path, field: str, header: dict[str, object],
                                                     words: str) -> None:
    # Argon2 with these limits would take minutes or try to allocate up to
    # 16 EiB (a MemoryError, not a KeyFileError); a refusal within a
    # second, as a KeyFileError, proves it never ran.
    fields: dict[str, object] = dict(magic=b"SKEYENC1", kind=1, reserved=bytes(7), ops=crypto.OPSLIMIT_SENSITIVE,
                                     mem=crypto.MEMLIMIT_SENSITIVE, salt=os.urandom(16))
    fields.update(header)
    data = HEADER.pack(fields["magic"], fields["kind"], fields["reserved"], fields["ops"], fields["mem"],
                       fields["salt"], os.urandom(24)) + os.urandom(32 + 16)
    path = make_file(private_dir / "k.enc", data)
    passphrase = secure(PASSPHRASE)
    gc.collect()
    live = live_buffers()
    started = time.monotonic()
    with pytest.raises(KeyFileError, match=words) as info:
        read_key(path, 32, passphrase=passphrase)
    assert time.monotonic() - started < 1.0
    assert info.value.filename == str(path) and "encrypted key file" in str(info.value)
    del info
    gc.collect()
    assert live_buffers() == live


@pytest.mark.parametrize("header", [dict(ops=1), dict(mem=8192), dict(salt=b"\x01" + bytes(15))])
def test_kek_file_with_argon2_fields_is_refused(private_dir: Path, kek: SecureBuffer,
                                               header: dict[str, object]) -> None:
    fields: dict[str, object] = dict(ops=0, mem=0, salt=bytes(16))
    fields.update(header)
    data = HEADER.pack(b"SKEYENC1", 2, bytes(7), fields["ops"], fields["mem"], fields["salt"],
                       os.urandom(24)) + os.urandom(48)
    with pytest.raises(KeyFileError, match="zero Argon2id limits and an all-zero salt"):
        read_key(make_file(private_dir / "k.enc", data), 32, kek=kek)


def test_kind_mismatch_says_what_to_pass(private_dir: Path, passphrase: SecureBuffer, kek: SecureBuffer) -> None:
    key = create_key(32)
    write_key(private_dir / "p", key, passphrase=passphrase, opslimit=OPS, memlimit=MEM)
    write_key(private_dir / "k", key, kek=kek)
    with pytest.raises(KeyFileError, match="encrypted under a passphrase: pass passphrase=, not kek="):
        read_key(private_dir / "p", 32, kek=kek)
    with pytest.raises(KeyFileError, match="encrypted under a key-encryption key: pass kek=, not passphrase="):
        read_key(private_dir / "k", 32, passphrase=passphrase)


@pytest.mark.parametrize("change", ["truncated by 1", "truncated to the header", "empty", "extended by 1",
                                    "extended by a block"])
def test_truncated_and_extended_files(private_dir: Path, kek: SecureBuffer, change: str) -> None:
    good = encode(b"s" * 32, 2, key_bytes(kek))
    data = {"truncated by 1": good[:-1], "truncated to the header": good[:72], "empty": b"",
            "extended by 1": good + b"\0", "extended by a block": good + bytes(4096)}[change]
    # Cut within a header and a tag, a file is no encrypted key of any size: it says it is truncated.
    expected = (f"wrong size: an encrypted key file of a 32-byte key has 120 bytes, (the file has|this one) {len(data)}"
                if change != "truncated to the header" else "a truncated encrypted key file: .* 72 bytes are fewer than")
    with pytest.raises(KeyFileError, match=expected) as info:
        read_key(make_file(private_dir / "k.enc", data), 32, kek=kek)
    assert type(info.value) is not EncryptedKeyFileError   # with kek= given, asking for one would not help


def test_plain_read_of_an_encrypted_file_says_what_to_pass(private_dir: Path, kek: SecureBuffer) -> None:
    path = private_dir / "k.enc"
    write_key(path, create_key(32), kek=kek)
    with pytest.raises(EncryptedKeyFileError, match="an encrypted key file .* of a 32-byte key if it is whole: "
                                                    "pass passphrase= or kek=: "):
        read_key(path, 32)
    with pytest.raises(KeyFileError, match="of a 32-byte key if it is whole: pass passphrase= or kek=, and size=32"):
        read_key(path, 16)
    from securekeys import KeyRing
    with pytest.raises(KeyFileError, match="encrypted key file"):
        KeyRing(32).read_key(path)


@pytest.mark.parametrize("trust", ["strict", "root-managed"])
def test_plain_read_at_the_encrypted_size_is_refused(private_dir: Path, kek: SecureBuffer, trust: str) -> None:
    # 120 bytes read as a plain 120-byte key would be the header and the
    # ciphertext taken for a key, without a word: the magic is looked at in
    # place (read_key's C path and the full path), whatever the size.
    path = private_dir / "k.enc"
    write_key(path, create_key(32), kek=kek)
    from securekeys import KeyRing
    gc.collect()
    live = live_buffers()
    for read in (lambda: read_key(path, 120, trust=trust),   # type: ignore[arg-type]
                 lambda: KeyRing(120).read_key(path, trust=trust)):   # type: ignore[arg-type]
        with pytest.raises(EncryptedKeyFileError, match="encrypted key file .* of a 32-byte key .* and size=32"):
            read()
    gc.collect()
    assert live_buffers() == live
    # A plain key of that size that merely looks alike past the magic is read.
    other = make_file(private_dir / "other", b"SKEYENX" + os.urandom(113))
    assert key_bytes(read_key(other, 120))[:7] == b"SKEYENX"


def test_encrypted_read_of_a_plain_file_says_so(private_dir: Path, kek: SecureBuffer) -> None:
    write_key(private_dir / "plain", create_key(32))
    with pytest.raises(KeyFileError, match="a plain 32-byte key file, not an encrypted one"):
        read_key(private_dir / "plain", 32, kek=kek)
    # A plain key of exactly the encrypted size: refused without its bytes
    # ever leaving guarded memory (the magic is compared in place).
    make_file(private_dir / "plain120", os.urandom(120))
    with pytest.raises(KeyFileError, match="not an encrypted key file: it does not start with SKEYENC1"):
        read_key(private_dir / "plain120", 32, kek=kek)
    # Another size: a wrong size, with no guess at an encrypted key inside.
    make_file(private_dir / "plain200", os.urandom(200))
    with pytest.raises(KeyFileError, match=r"wrong size: .* has 120 bytes, the file has 200: '") as info:
        read_key(private_dir / "plain200", 32, kek=kek)
    assert "112" not in info.value.strerror   # the message, not the path (pytest-112/...)


def test_encrypted_read_with_the_wrong_size_names_the_size_inside(private_dir: Path, kek: SecureBuffer) -> None:
    path = private_dir / "k.enc"
    write_key(path, create_key(32), kek=kek)
    for size in (120, 16):
        with pytest.raises(KeyFileError, match=f"has {size + 88} bytes, this one 120: the size of an encrypted "
                                               r"32-byte key \(pass size=32") as info:
            read_key(path, size, kek=kek)
        assert "plain" not in str(info.value)


@pytest.mark.parametrize("encoding, size", [("hex", 60), ("base64", 90), ("base64url", 90)])
def test_a_plain_text_read_of_an_encrypted_file_is_encrypted_key_file_error(
        private_dir: Path, encoding: str, size: int) -> None:
    # A 32-byte key's encrypted file is 120 bytes: exactly the text length of
    # a 60-byte key in hex or a 90-byte key in base64.
    path = private_dir / "e"
    write_key(path, create_key(32), kek=create_key(32))
    assert path.stat().st_size == 120
    with pytest.raises(EncryptedKeyFileError):
        read_key(path, size, encoding=encoding)


def test_bad_arguments(private_dir: Path, passphrase: SecureBuffer, kek: SecureBuffer) -> None:
    key = create_key(32)
    path = private_dir / "k.enc"
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        (dict(passphrase=passphrase, kek=kek), ValueError, "not both"),
        (dict(passphrase=PASSPHRASE), TypeError, "stays in the heap"),
        (dict(passphrase="correct horse"), TypeError, "stays in the heap"),
        (dict(kek=bytes(32)), TypeError, "32-byte SecureKey"),
        (dict(kek=create_key(16)), ValueError, "kek must be 32 bytes, not 16"),
        (dict(kek=kek, encoding="base64"), ValueError, "plain key files"),
        (dict(passphrase=passphrase, opslimit=0), ValueError, "opslimit must be between"),
        (dict(passphrase=passphrase, opslimit=crypto.OPSLIMIT_SENSITIVE + 1), ValueError, "OPSLIMIT_SENSITIVE"),
        (dict(passphrase=passphrase, memlimit=crypto.MEMLIMIT_SENSITIVE + 1), ValueError, "MEMLIMIT_SENSITIVE"),
        (dict(passphrase=passphrase, memlimit=1.5), TypeError, "memlimit must be an int"),
        (dict(opslimit=crypto.OPSLIMIT_SENSITIVE), ValueError, "without a passphrase they protect nothing"),
        (dict(kek=kek, memlimit=crypto.MEMLIMIT_SENSITIVE), ValueError, "protect nothing"),
    ]
    gc.collect()
    live = live_buffers()
    for given, error, words in cases:
        with pytest.raises(error, match=words):
            write_key(path, key, **given)   # type: ignore[arg-type]
        assert not path.exists()
    for given, error, words in cases[:6]:
        with pytest.raises(error, match=words):
            read_key("/nonexistent/never/opened", 32, **given)   # type: ignore[arg-type]
    gc.collect()
    assert live_buffers() == live


def test_write_refuses_an_existing_path_and_leaves_it(private_dir: Path, kek: SecureBuffer) -> None:
    path = make_file(private_dir / "k.enc", b"old")
    with pytest.raises(FileExistsError):
        write_key(path, create_key(32), kek=kek)
    assert path.read_bytes() == b"old"


def test_errors_leave_no_fd_no_mapping_no_buffer(private_dir: Path, kek: SecureBuffer) -> None:
    good = make_file(private_dir / "good", encode(b"g" * 32, 2, key_bytes(kek)))
    forged = make_file(private_dir / "forged", flipped(encode(b"g" * 32, 2, key_bytes(kek)), 100))
    plain = make_file(private_dir / "plain", b"p" * 32)
    short = make_file(private_dir / "short", b"s" * 119)
    bad_paths = [forged, plain, short, private_dir / "missing", private_dir]
    gc.collect()
    fds, maps, live = open_fds(), mappings(), live_buffers()
    for i in range(4000):
        if i % 2:
            with pytest.raises((OSError, DecryptionError)):
                read_key(bad_paths[i % len(bad_paths)], 32, kek=kek)
        else:
            read_key(good, 32, kek=kek).destroy()
    gc.collect()
    assert open_fds() == fds
    assert live_buffers() == live
    assert mappings() <= maps + 4


def test_destroyed_key_is_fatal_before_any_file(private_dir: Path) -> None:
    for given in ("kek=create_key(32)", "passphrase=create_key(12), opslimit=1, memlimit=8192"):
        assert_dies(f"""
from securekeys import create_key, write_key
k = create_key(32)
k.destroy()
write_key({str(private_dir / 'k.enc')!r}, k, {given})
print("REACHED")
""", __import__("signal").SIGABRT, "destroyed")
        assert not (private_dir / "k.enc").exists()
    assert_dies(f"""
from securekeys import create_key, read_key
kek = create_key(32)
kek.destroy()
read_key("/nonexistent", 32, kek=kek)
print("REACHED")
""", __import__("signal").SIGABRT, "destroyed")


@pytest.mark.parametrize("kind", ["passphrase", "kek"])
def test_no_key_kek_or_passphrase_left_on_the_stack(private_dir: Path, kind: str) -> None:
    # Write and read an encrypted key file (and fail to read it with the
    # wrong secret), then scan this thread's stack for the key, the
    # passphrase and the KEK derived from it.
    given = ("passphrase=secret, opslimit=crypto.OPSLIMIT_MIN, memlimit=crypto.MEMLIMIT_MIN"
             if kind == "passphrase" else "kek=secret")
    wrong = "passphrase=create_key(28)" if kind == "passphrase" else "kek=create_key(32)"
    code = SCAN + f"""
import pysodium, struct
from securekeys import read_key, write_key
path = {str(private_dir / 'k.enc')!r}
master = create_key(32)
secret = create_key(28 if {kind!r} == "passphrase" else 32)
write_key(path, master, {given})
loaded = read_key(path, 32, {given.split(',')[0]})
try:
    read_key(path, 32, {wrong})
except crypto.DecryptionError:
    pass
snaps = [stack_now()]
secrets = [("key", record(master)), ("{kind}", record(secret))]
for buffer in (master, secret, loaded):
    buffer.destroy()
snaps.append(stack_now())
# Derived last, here, by pysodium (which leaves it on the stack itself).
if {kind!r} == "passphrase":
    _, _, _, ops, mem, salt, _ = struct.unpack_from("<8sB7sQQ16s24s", open(path, "rb").read())
    secrets.append(("derived KEK", pysodium.crypto_pwhash(32, secrets[1][1], salt, ops, mem,
                                                          pysodium.crypto_pwhash_ALG_ARGON2ID13)))
report(secrets, snaps)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr.decode()
    assert b"LEAKED []" in result.stdout, result.stdout


# A real signal's handler runs where CPython runs it when the signal arrives
# during a system call: as the call returns.  The profile hook's c_return
# event is that point: it sends SIGUSR1, whose handler raises there.
INTERRUPT_AT_RETURN = '''
import os, signal, sys
from securekeys import create_key, write_key
from securekeys import crypto

TARGET = "link"
def interrupted(signum, frame):
    raise KeyboardInterrupt("SIGUSR1 as " + TARGET + " returned")
signal.signal(signal.SIGUSR1, interrupted)
armed = [1]

def profile(frame, event, arg):
    if event == "c_return" and armed and getattr(arg, "__name__", "") == TARGET:
        armed.clear()
        os.kill(os.getpid(), signal.SIGUSR1)

sys.setprofile(profile)
try:
    CALL
    outcome = "RETURNED"
except KeyboardInterrupt:
    outcome = "RAISED"
sys.setprofile(None)
print(outcome, sorted(os.listdir(DIR)))
'''


@pytest.mark.parametrize("given", ["", ", kek=create_key(32)",
                                   ", passphrase=create_key(12), opslimit=crypto.OPSLIMIT_MIN, "
                                   "memlimit=crypto.MEMLIMIT_MIN"])
def test_write_key_interrupted_as_link_returns_leaves_nothing(private_dir: Path, given: str) -> None:
    # The key was linked into place, then the handler raised: write_key
    # raises, so the link must be taken back.
    code = (INTERRUPT_AT_RETURN.replace("DIR", repr(str(private_dir)))
            .replace("CALL", f"write_key({str(private_dir / 'k')!r}, create_key(32){given})"))
    result = run_python(code)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split("\n")[0] == "RAISED []", result.stdout


# -- a plain read meets SKEYENC: whatever encoding, size or length ------------------

@pytest.mark.parametrize("encoding", ["raw", "hex", "base64", "base64url"])
@pytest.mark.parametrize("size", [16, 32, 60, 90, 1000])
def test_every_plain_read_of_an_encrypted_file_says_what_it_is(
        private_dir: Path, kek: SecureBuffer, encoding: str, size: int) -> None:
    # Before, only the sizes whose text length happened to be 120 bytes
    # (hex of 60, base64 of 90) said so; the others were "wrong size".
    path = private_dir / "k.enc"
    write_key(path, create_key(32), kek=kek)
    with pytest.raises(EncryptedKeyFileError) as info:
        read_key(path, size, encoding=encoding)  # type: ignore[arg-type]
    message = str(info.value)
    assert "of a 32-byte key if it is whole: pass passphrase= or kek=" in message
    assert ("and size=32" in message) == (size != 32)
    assert ("without encoding=" in message) == (encoding != "raw")
    assert "wrong size" not in message


@pytest.mark.parametrize("length", [7, 8, 32, 72, 88])
def test_a_truncated_encrypted_file_is_never_a_plain_key(private_dir: Path, kek: SecureBuffer, length: int) -> None:
    # Cut to 32 bytes it used to load as a plain 32-byte key starting with
    # SKEYENC (read_key's C path checked the magic only from 89 bytes on).
    whole = encode(b"s" * 32, 2, key_bytes(kek))
    path = make_file(private_dir / "k.enc", whole[:length])
    reads: list[dict[str, object]] = [dict(size=length), dict(size=16), dict(size=32, encoding="hex"),
                                      dict(size=32, encoding="base64"), dict(size=32, kek=kek),
                                      dict(size=length, trust="root-managed")]
    for options in reads:
        with pytest.raises(KeyFileError, match=f"a truncated encrypted key file: it starts with SKEYENC, but "
                                               f"{length} bytes are fewer than the 89") as info:
            read_key(path, **options)  # type: ignore[arg-type]
        # Not EncryptedKeyFileError: a program catching that asks for a
        # passphrase, and none can read what is left.
        assert type(info.value) is KeyFileError, options


@pytest.mark.parametrize("content", [b"S", b"SKE", b"SKEYEN", b"SKEYENd", b"XSKEYENC" + bytes(100)])
def test_what_is_not_the_whole_magic_is_a_plain_key(private_dir: Path, content: bytes) -> None:
    # Below 7 bytes nothing is compared with part of the magic.
    path = make_file(private_dir / "k", content)
    assert key_bytes(read_key(path, len(content))) == content
