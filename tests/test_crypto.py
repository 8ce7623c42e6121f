"""securekeys.crypto against real libsodium, with pysodium as the oracle.

The tests turn keys into bytes to hand them to pysodium: that is the oracle's
interface, never the library's.  Fatal behaviour and the terminal run in
child processes.
"""

from __future__ import annotations

import array
import gc
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import textwrap
import threading
import typing
from collections.abc import Callable
from pathlib import Path

import pysodium  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import securekeys
from securekeys import Protection, SecureBuffer, SecureKey, create_key, destroy_key
from securekeys import _memory
from securekeys import crypto
from securekeys.crypto import (
    DecryptionError,
    SigningKeyPair,
    aead_decrypt,
    aead_encrypt,
    derive_key,
    keyed_hash,
    mac,
    mac_verify,
    password_key,
    read_password,
    sign,
    signing_keypair,
    verify,
)

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -- helpers ----------------------------------------------------------------

def secure(data: bytes) -> SecureBuffer:
    """A READONLY SecureBuffer holding `data` (test input only)."""
    buf = SecureBuffer(len(data))
    with buf.writing() as view:
        view[:] = data
    buf.readonly()
    return buf


def secure_key(data: bytes) -> SecureKey:
    """A READONLY SecureKey holding `data`, filled with read(2) from a pipe."""
    key = SecureKey(len(data))
    r, w = os.pipe()
    try:
        os.write(w, data)
        os.close(w)
        assert key.readinto(r) == len(data)
    finally:
        os.close(r)
    key.readonly()
    return key


def raw(buf: SecureBuffer) -> bytes:
    """The bytes of a secure buffer, for comparison with the oracle."""
    with buf.reading() as view:
        return bytes(view)


def no_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_child(code: str, **kwargs: typing.Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, timeout=60,
                          preexec_fn=no_core, **kwargs)


keys32 = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=24, max_size=24)
messages = st.binary(max_size=300)


# -- AEAD -------------------------------------------------------------------

@SETTINGS
@given(keys32, messages, nonces, st.none() | st.binary(max_size=64))
def test_aead_matches_pysodium(k: bytes, m: bytes, n: bytes, aad: bytes | None) -> None:
    key = secure_key(k)
    c = aead_encrypt(key, m, n, aad)
    assert type(c) is bytes
    assert c == pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(m, aad, n, k)
    if m:
        plain = aead_decrypt(key, c, n, aad)
        assert type(plain) is SecureBuffer
        assert plain.state is Protection.READONLY
        assert raw(plain) == m
    else:
        with pytest.raises(ValueError, match="nothing to decrypt") as info:
            aead_decrypt(key, c, n, aad)
        assert not isinstance(info.value, DecryptionError)


@SETTINGS
@given(keys32, st.binary(min_size=1, max_size=300), nonces, st.binary(max_size=64))
def test_aead_decrypts_pysodium_ciphertext(k: bytes, m: bytes, n: bytes, aad: bytes) -> None:
    c = pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(m, aad, n, k)
    assert raw(aead_decrypt(secure(k), c, n, aad)) == m


def test_aead_none_aad_is_empty_aad() -> None:
    key, n = create_key(32), os.urandom(24)
    assert aead_encrypt(key, b"msg", n) == aead_encrypt(key, b"msg", n, b"")
    assert raw(aead_decrypt(key, aead_encrypt(key, b"msg", n, b""), n)) == b"msg"


def test_aead_large_message_releases_gil_path() -> None:
    key, n = create_key(32), os.urandom(24)
    m = os.urandom(1 << 20)
    c = aead_encrypt(key, m, n, b"a" * 2000)
    with key.reading() as kv:
        assert c == pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(m, b"a" * 2000, n, bytes(kv))
    assert raw(aead_decrypt(key, c, n, b"a" * 2000)) == m


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview,
                                  lambda b: array.array("B", b)])
def test_public_inputs_any_bytes_like(make: Callable[[bytes], typing.Any]) -> None:
    key, n = create_key(32), os.urandom(24)
    m, aad = b"attack at dawn", b"header"
    c = aead_encrypt(key, make(m), make(n), make(aad))
    assert c == aead_encrypt(key, m, n, aad)
    assert raw(aead_decrypt(key, make(c), make(n), make(aad))) == m
    assert mac(key, make(m)) == mac(key, m)
    assert mac_verify(key, make(m), make(mac(key, m)))
    assert keyed_hash(key, make(m)) == keyed_hash(key, m)
    pair = signing_keypair()
    assert sign(pair.secret, make(m)) == sign(pair.secret, m)
    assert verify(make(pair.public), make(m), make(sign(pair.secret, m)))
    assert raw(derive_key(key, 1, make(b"context_"))) == raw(derive_key(key, 1, b"context_"))


def test_secret_plaintext_from_noaccess_secure_buffer() -> None:
    # Key wrapping: a secret input is borrowed like a key, never exported.
    kek, n = create_key(32), os.urandom(24)
    inner = create_key(32)
    inner.noaccess()
    wrapped = aead_encrypt(kek, inner, n)
    assert inner.state is Protection.NOACCESS
    assert aead_decrypt(kek, wrapped, n) == inner
    assert mac(kek, inner) == mac(kek, raw(inner))
    assert inner.state is Protection.NOACCESS


def test_non_contiguous_input_is_refused() -> None:
    key = create_key(32)
    with pytest.raises(BufferError):
        aead_encrypt(key, memoryview(b"abcdefgh")[::2], os.urandom(24))


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def test_tampering_any_byte_is_detected() -> None:
    key, n, aad = create_key(32), os.urandom(24), os.urandom(20)
    c = aead_encrypt(key, b"the plaintext", n, aad)
    gc.collect()   # a baseline without garbage left by earlier tests
    live = _memory.live_buffers()
    for i in range(len(c)):                       # ciphertext and tag
        with pytest.raises(DecryptionError):
            aead_decrypt(key, _flip(c, i), n, aad)
    for i in range(len(aad)):
        with pytest.raises(DecryptionError):
            aead_decrypt(key, c, n, _flip(aad, i))
    for i in range(len(n)):
        with pytest.raises(DecryptionError):
            aead_decrypt(key, c, _flip(n, i), aad)
    with pytest.raises(DecryptionError):
        aead_decrypt(key, c, n, None)             # AAD dropped
    with pytest.raises(DecryptionError):
        aead_decrypt(create_key(32), c, n, aad)   # wrong key
    with pytest.raises(DecryptionError):
        aead_decrypt(key, c + b"\0", n, aad)      # extended
    gc.collect()
    assert _memory.live_buffers() == live         # no plaintext buffer left behind
    assert raw(aead_decrypt(key, c, n, aad)) == b"the plaintext"


def test_decryption_error_is_value_error() -> None:
    assert issubclass(DecryptionError, ValueError)
    assert DecryptionError.__module__ == "securekeys.errors"
    assert DecryptionError is securekeys.errors.DecryptionError


@pytest.mark.parametrize("length", range(16))
def test_ciphertext_shorter_than_tag(length: int) -> None:
    with pytest.raises(DecryptionError, match="at least 16 bytes"):
        aead_decrypt(create_key(32), b"\0" * length, os.urandom(24))


def test_empty_plaintext_is_authenticated_first() -> None:
    key, n = create_key(32), os.urandom(24)
    tag_only = aead_encrypt(key, b"", n)
    assert len(tag_only) == 16
    with pytest.raises(DecryptionError):
        aead_decrypt(key, _flip(tag_only, 3), n)
    with pytest.raises(ValueError, match="nothing to decrypt"):
        aead_decrypt(key, tag_only, n)


# -- KDF --------------------------------------------------------------------

@SETTINGS
@given(keys32, st.integers(0, 2**64 - 1), st.binary(min_size=8, max_size=8),
       st.integers(16, 64))
def test_derive_key_matches_pysodium(k: bytes, sub: int, ctx: bytes, size: int) -> None:
    sub_key = derive_key(secure_key(k), sub, ctx, size)
    assert type(sub_key) is SecureKey
    assert sub_key.state is Protection.READONLY
    assert len(sub_key) == size
    assert raw(sub_key) == pysodium.crypto_kdf_derive_from_key(size, sub, ctx, k)


def test_derive_key_default_size() -> None:
    assert len(derive_key(create_key(32), 0, b"12345678")) == 32


# -- MAC and keyed hash -----------------------------------------------------

@SETTINGS
@given(keys32, messages)
def test_mac_matches_pysodium(k: bytes, m: bytes) -> None:
    key = secure(k)
    tag = mac(key, m)
    assert tag == pysodium.crypto_auth(m, k)
    assert mac_verify(key, m, tag) is True
    assert mac_verify(key, m + b"x", tag) is False
    assert mac_verify(key, m, _flip(tag, len(m) % 32)) is False


@SETTINGS
@given(st.binary(min_size=16, max_size=64), messages, st.integers(16, 64))
def test_keyed_hash_matches_pysodium(k: bytes, m: bytes, size: int) -> None:
    h = keyed_hash(secure(k), m, size)
    assert h == pysodium.crypto_generichash(m, k, size)
    assert len(h) == size


def test_keyed_hash_default_size() -> None:
    assert len(keyed_hash(create_key(16), b"m")) == 32


# -- signatures -------------------------------------------------------------

@SETTINGS
@given(keys32, messages)
def test_signing_matches_pysodium(seed: bytes, m: bytes) -> None:
    pair = signing_keypair(secure(seed))
    pk, sk = pysodium.crypto_sign_seed_keypair(seed)
    assert isinstance(pair, SigningKeyPair)
    assert pair.public == pk
    assert type(pair.secret) is SecureKey
    assert pair.secret.state is Protection.READONLY
    assert raw(pair.secret) == sk
    sig = sign(pair.secret, m)
    assert sig == pysodium.crypto_sign_detached(m, sk)
    assert verify(pair.public, m, sig) is True
    assert verify(pair.public, m + b"x", sig) is False
    assert verify(pair.public, m, _flip(sig, 5)) is False


def test_random_signing_keypair() -> None:
    a, b = signing_keypair(), signing_keypair()
    assert a.public != b.public
    assert len(a.public) == 32 and len(a.secret) == 64
    sig = sign(a.secret, b"hello")
    pysodium.crypto_sign_verify_detached(sig, b"hello", a.public)   # raises if invalid
    assert not verify(b.public, b"hello", sig)


def test_signing_keypair_is_a_named_tuple() -> None:
    pair = signing_keypair()
    public, secret = pair
    assert pair._fields == ("public", "secret")
    assert typing.get_type_hints(SigningKeyPair) == {"public": bytes, "secret": SecureKey}
    assert "secret=<SecureKey size=64" in repr(pair)      # no key bytes in the repr


def test_destroy_key_destroys_signing_secret() -> None:
    pair = signing_keypair()
    destroy_key(pair)
    assert pair.secret.destroyed
    securekeys.destroy_key(pair)   # idempotent


# -- Argon2id ---------------------------------------------------------------

@settings(max_examples=10, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.binary(min_size=16, max_size=16),
       st.integers(16, 64))
def test_password_key_matches_pysodium(pw: bytes, salt: bytes, size: int) -> None:
    key = password_key(secure(pw), salt, size,
                       opslimit=crypto.OPSLIMIT_MIN, memlimit=crypto.MEMLIMIT_MIN)
    assert type(key) is SecureKey
    assert key.state is Protection.READONLY
    assert raw(key) == pysodium.crypto_pwhash(
        size, pw, salt, crypto.OPSLIMIT_MIN, crypto.MEMLIMIT_MIN,
        pysodium.crypto_pwhash_ALG_ARGON2ID13)


def test_password_key_interactive_defaults() -> None:
    assert crypto.OPSLIMIT_INTERACTIVE == pysodium.crypto_pwhash_OPSLIMIT_INTERACTIVE
    assert crypto.MEMLIMIT_INTERACTIVE == pysodium.crypto_pwhash_MEMLIMIT_INTERACTIVE
    salt = bytes(range(16))
    key = password_key(secure(b"correct horse battery staple"), salt)
    assert raw(key) == pysodium.crypto_pwhash(
        32, b"correct horse battery staple", salt, crypto.OPSLIMIT_INTERACTIVE,
        crypto.MEMLIMIT_INTERACTIVE, pysodium.crypto_pwhash_ALG_ARGON2ID13)


# -- wrong types and lengths --------------------------------------------------

N24 = b"\0" * 24
BAD_KEYS = [b"\0" * 32, bytearray(32), memoryview(b"\0" * 32), "k" * 32, None, 32]
NON_SECURE_CALLS: list[Callable[[typing.Any], object]] = [
    lambda k: aead_encrypt(k, b"m", N24),
    lambda k: aead_decrypt(k, b"\0" * 20, N24),
    lambda k: derive_key(k, 1, b"12345678"),
    lambda k: mac(k, b"m"),
    lambda k: mac_verify(k, b"m", b"\0" * 32),
    lambda k: keyed_hash(k, b"m"),
    lambda k: signing_keypair(k),
    lambda k: sign(k, b"m"),
    lambda k: password_key(k, b"\0" * 16),
]


NON_SECURE_CASES = [
    pytest.param(call, bad, id=f"{name}-{type(bad).__name__}")
    for name, call in zip(["aead_encrypt", "aead_decrypt", "derive_key", "mac", "mac_verify",
                           "keyed_hash", "signing_keypair", "sign", "password_key"],
                          NON_SECURE_CALLS)
    for bad in BAD_KEYS
    if not (name == "signing_keypair" and bad is None)   # None: a random seed
]


@pytest.mark.parametrize("call, bad", NON_SECURE_CASES)
def test_non_secure_keys_are_type_errors(call: Callable[[object], object], bad: object) -> None:
    with pytest.raises(TypeError, match=f"must be a SecureBuffer, not {type(bad).__name__}"):
        call(bad)


def test_type_error_message() -> None:
    with pytest.raises(TypeError, match="^key must be a SecureBuffer, not bytes$"):
        aead_encrypt(b"\0" * 32, b"m", N24)   # type: ignore[arg-type]


@pytest.mark.parametrize("call, message", [
    (lambda: aead_encrypt(create_key(16), b"m", N24), "key must be 32 bytes long, not 16"),
    (lambda: aead_decrypt(create_key(64), b"\0" * 20, N24), "key must be 32 bytes long, not 64"),
    (lambda: aead_encrypt(create_key(32), b"m", b"\0" * 12), "nonce must be 24 bytes long, not 12"),
    (lambda: aead_decrypt(create_key(32), b"\0" * 20, b"\0" * 25), "nonce must be 24 bytes long"),
    (lambda: derive_key(create_key(31), 1, b"12345678"), "master must be 32 bytes long"),
    (lambda: derive_key(create_key(32), 1, b"1234567"), "context must be 8 bytes long, not 7"),
    (lambda: derive_key(create_key(32), 1, b"12345678", 15), "size must be between 16 and 64"),
    (lambda: derive_key(create_key(32), 1, b"12345678", 65), "size must be between 16 and 64"),
    (lambda: derive_key(create_key(32), -1, b"12345678"), "subkey_id must be between 0 and 2\\*\\*64-1"),
    (lambda: derive_key(create_key(32), 2**64, b"12345678"), "subkey_id must be between"),
    (lambda: mac(create_key(16), b"m"), "key must be 32 bytes long, not 16"),
    (lambda: mac_verify(create_key(32), b"m", b"\0" * 31), "tag must be 32 bytes long, not 31"),
    (lambda: keyed_hash(create_key(15), b"m"), "key must be between 16 and 64 bytes long, not 15"),
    (lambda: keyed_hash(create_key(65), b"m"), "key must be between 16 and 64 bytes long, not 65"),
    (lambda: keyed_hash(create_key(32), b"m", 15), "size must be between 16 and 64"),
    (lambda: keyed_hash(create_key(32), b"m", 65), "size must be between 16 and 64"),
    (lambda: signing_keypair(create_key(31)), "seed must be 32 bytes long, not 31"),
    (lambda: sign(create_key(32), b"m"), "secret must be 64 bytes long, not 32"),
    (lambda: verify(b"\0" * 31, b"m", b"\0" * 64), "public must be 32 bytes long, not 31"),
    (lambda: verify(b"\0" * 32, b"m", b"\0" * 63), "signature must be 64 bytes long, not 63"),
    (lambda: password_key(create_key(8), b"\0" * 15), "salt must be 16 bytes long, not 15"),
    (lambda: password_key(create_key(8), b"\0" * 16, 15), "size must be between 16 and"),
    (lambda: password_key(create_key(8), b"\0" * 16, opslimit=0), "opslimit must be between"),
    (lambda: password_key(create_key(8), b"\0" * 16, memlimit=1024), "memlimit must be between"),
])
def test_wrong_lengths_are_value_errors(call: Callable[[], object], message: str) -> None:
    gc.collect()   # a baseline without garbage left by earlier tests
    live = _memory.live_buffers()
    with pytest.raises(ValueError, match=message):
        call()
    gc.collect()
    assert _memory.live_buffers() == live


@pytest.mark.parametrize("call", [
    lambda: aead_encrypt(create_key(32), "text", N24),  # type: ignore[arg-type]
    lambda: aead_encrypt(create_key(32), b"m", N24, aad="aad"),  # type: ignore[arg-type]
    lambda: aead_encrypt(create_key(32), 5, N24),  # type: ignore[arg-type]
    lambda: aead_decrypt(create_key(32), None, N24),  # type: ignore[arg-type]
    lambda: derive_key(create_key(32), 1, "12345678"),  # type: ignore[arg-type]
    lambda: derive_key(create_key(32), "1", b"12345678"),  # type: ignore[arg-type]
    lambda: derive_key(create_key(32), 1.0, b"12345678"),  # type: ignore[arg-type]
    lambda: derive_key(create_key(32), True, b"12345678"),
    lambda: derive_key(create_key(32), 1, b"12345678", 32.0),  # type: ignore[arg-type]
    lambda: mac(create_key(32), "m"),  # type: ignore[arg-type]
    lambda: keyed_hash(create_key(32), b"m", "32"),  # type: ignore[arg-type]
    lambda: verify("p" * 32, b"m", b"\0" * 64),  # type: ignore[arg-type]
    lambda: password_key(create_key(8), b"\0" * 16, opslimit=2.0),  # type: ignore[arg-type]
    lambda: read_password(b"prompt"),  # type: ignore[arg-type]
])
def test_wrong_types_are_type_errors(call: Callable[[], object]) -> None:
    with pytest.raises(TypeError):
        call()


# -- protection state ---------------------------------------------------------

def _noaccess(buf: SecureBuffer) -> SecureBuffer:
    buf.noaccess()
    return buf


def test_noaccess_keys_stay_noaccess() -> None:
    key = _noaccess(create_key(32))
    n = os.urandom(24)
    c = aead_encrypt(key, b"secret message", n, b"ad")
    assert key.state is Protection.NOACCESS
    assert raw(aead_decrypt(key, c, n, b"ad")) == b"secret message"
    assert key.state is Protection.NOACCESS
    with pytest.raises(DecryptionError):
        aead_decrypt(key, _flip(c, 0), n, b"ad")
    assert key.state is Protection.NOACCESS
    assert mac_verify(key, b"m", mac(key, b"m"))
    assert key.state is Protection.NOACCESS
    keyed_hash(key, b"m")
    assert key.state is Protection.NOACCESS
    derive_key(key, 7, b"context!")
    assert key.state is Protection.NOACCESS

    seed = _noaccess(create_key(32))
    pair = signing_keypair(seed)
    assert seed.state is Protection.NOACCESS
    pair.secret.noaccess()
    sig = sign(pair.secret, b"m")
    assert pair.secret.state is Protection.NOACCESS
    assert verify(pair.public, b"m", sig)

    password = _noaccess(secure(b"pw"))
    password_key(password, b"\0" * 16, opslimit=crypto.OPSLIMIT_MIN,
                 memlimit=crypto.MEMLIMIT_MIN)
    assert password.state is Protection.NOACCESS


def test_readwrite_secure_buffer_key_is_accepted_and_unchanged() -> None:
    key = SecureBuffer(32)
    assert key.state is Protection.READWRITE
    mac(key, b"m")
    assert key.state is Protection.READWRITE


DESTROYED_CALLS = {
    "aead_encrypt": "aead_encrypt(k32, b'm', b'\\0' * 24)",
    "aead_decrypt": "aead_decrypt(k32, b'\\0' * 40, b'\\0' * 24)",
    "derive_key": "derive_key(k32, 1, b'12345678')",
    "mac": "mac(k32, b'm')",
    "mac_verify": "mac_verify(k32, b'm', b'\\0' * 32)",
    "keyed_hash": "keyed_hash(k32, b'm')",
    "signing_keypair": "signing_keypair(k32)",
    "sign": "sign(k64, b'm')",
    "password_key": "password_key(k32, b'\\0' * 16, opslimit=OPSLIMIT_MIN, memlimit=MEMLIMIT_MIN)",
    "public input": "mac(create_key(32), k32)",
}


@pytest.mark.parametrize("name", DESTROYED_CALLS)
def test_destroyed_key_is_fatal(name: str) -> None:
    result = run_child(f"""
        from securekeys import create_key
        from securekeys.crypto import *
        from securekeys.crypto import OPSLIMIT_MIN, MEMLIMIT_MIN
        k32, k64 = create_key(32), create_key(64)
        k32.destroy(); k64.destroy()
        {DESTROYED_CALLS[name]}
        print("survived")
    """)
    assert result.returncode == -signal.SIGABRT, result
    assert b"securekeys: fatal:" in result.stderr
    assert b"destroyed" in result.stderr
    assert b"survived" not in result.stdout


# -- threads ----------------------------------------------------------------

@pytest.mark.parametrize("noaccess", [False, True], ids=["readonly", "noaccess"])
@pytest.mark.parametrize("size", [64, 8192], ids=["small", "large"])
def test_threads_share_one_key(noaccess: bool, size: int) -> None:
    key = create_key(32)
    if noaccess:
        key.noaccess()
    results: list[list[tuple[bytes, bytes, bytes]]] = [[] for _ in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(slot: int) -> None:
        try:
            start.wait()
            for _ in range(100):
                m, n = os.urandom(size), os.urandom(24)
                results[slot].append((m, n, aead_encrypt(key, m, n, b"t%d" % slot)))
        except BaseException as exc:   # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert key.state is (Protection.NOACCESS if noaccess else Protection.READONLY)
    for slot, rows in enumerate(results):
        assert len(rows) == 100
        for m, n, c in rows:
            assert raw(aead_decrypt(key, c, n, b"t%d" % slot)) == m


# -- read_password ------------------------------------------------------------

PTY_CHILD = """
import os, sys, termios
from securekeys import SecureBuffer
from securekeys.crypto import read_password
expected = SecureBuffer(len({answer!r}) or 1)
with expected.writing() as view:
    view[:len({answer!r})] = {answer!r}
try:
    pw = read_password("Secret: ")
except BaseException as exc:
    print("RAISED", type(exc).__name__, exc, flush=True)
else:
    print("RESULT", len(pw), pw == expected, pw.state.name, flush=True)
fd = os.open("/dev/tty", os.O_RDONLY)
print("ECHO", bool(termios.tcgetattr(fd)[3] & termios.ECHO), flush=True)
"""


def run_in_pty(answer: bytes, typed: bytes, child: str = PTY_CHILD) -> tuple[bytes, int]:
    """Run read_password in a child whose controlling terminal is a new pty;
    type `typed` once the prompt ("Secret: ") is shown.  `child` is the
    child's code, formatted with `answer`.  Returns everything the terminal
    displayed and the wait status."""
    code = child.format(answer=answer)
    pid, master = pty.fork()
    if pid == 0:   # pragma: no cover - the child
        try:
            os.execv(sys.executable, [sys.executable, "-c", code])
        finally:
            os._exit(127)
    output = b""
    typed_yet = False
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"read_password child hung; terminal showed {output!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:          # EIO: the child has gone
                break
            if not chunk:
                break
            output += chunk
            if not typed_yet and b"Secret: " in output:
                os.write(master, typed)
                typed_yet = True
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    return output, status


def test_read_password_from_terminal_without_echo() -> None:
    output, status = run_in_pty(b"hunter2", b"hunter2\n")
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert output.startswith(b"Secret: ")
    assert b"RESULT 7 True READONLY" in output, output
    assert b"hunter2" not in output          # echo was off
    assert b"ECHO True" in output            # and is back on afterwards


def test_read_password_empty_line() -> None:
    output, _ = run_in_pty(b"", b"\n")
    assert b"RAISED ValueError no password was entered" in output, output
    assert b"ECHO True" in output


def test_read_password_end_of_file() -> None:
    output, _ = run_in_pty(b"", b"\x04")          # Ctrl-D
    assert b"RAISED EOFError" in output, output


def test_read_password_without_terminal() -> None:
    result = run_child("""
        from securekeys.crypto import read_password
        try:
            read_password()
        except OSError as exc:
            print("OSError", exc.errno)
    """, start_new_session=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result
    assert result.stdout.startswith(b"OSError"), result
