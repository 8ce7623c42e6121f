"""encrypt / decrypt / decrypt_into (issue 16, item 1): the AEAD with a random
nonce in front, against real libsodium with pysodium as the oracle."""

from __future__ import annotations

import array
import gc
import os

import pysodium  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_destroyed_key_is_fatal, run_threads
from securekeys import Protection, SecureBuffer, SecureKey, create_key
from securekeys import _memory
from securekeys.crypto import ENCRYPT_OVERHEAD_BYTES, DecryptionError, decrypt, decrypt_into, encrypt
from test_crypto_into import PATTERN, flip, patterned, raw

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sizes = st.integers(0, 64 * 1024)


def oracle_open(sealed: bytes, aad: bytes, k: bytes) -> bytes:
    # Any libsodium user: split off the nonce, decrypt the rest.
    return bytes(pysodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[24:], aad, sealed[:24], k))


@SETTINGS
@given(sizes, st.binary(max_size=32))
def test_ours_encrypts_pysodium_decrypts(size: int, aad: bytes) -> None:
    key, m = create_key(32), os.urandom(size)
    sealed = encrypt(key, m, aad)
    assert type(sealed) is bytes
    assert len(sealed) == size + ENCRYPT_OVERHEAD_BYTES == size + 40
    assert oracle_open(sealed, aad, raw(key)) == m


@SETTINGS
@given(sizes, st.binary(max_size=32))
def test_pysodium_encrypts_ours_decrypts(size: int, aad: bytes) -> None:
    key, m, nonce = create_key(32), os.urandom(size), os.urandom(24)
    sealed = nonce + pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(m, aad, nonce, raw(key))
    out = patterned(size + 3)
    assert decrypt_into(key, sealed, out, aad) == size
    assert raw(out) == m + bytes([PATTERN]) * 3
    if size:
        plain = decrypt(key, sealed, aad)
        assert type(plain) is SecureBuffer
        assert plain.state is Protection.READONLY
        assert raw(plain) == m
    else:
        with pytest.raises(ValueError, match="nothing to decrypt") as info:
            decrypt(key, sealed, aad)
        assert not isinstance(info.value, DecryptionError)


def test_every_message_gets_a_fresh_nonce() -> None:
    key = create_key(32)
    nonces = {encrypt(key, b"same")[:24] for _ in range(100)}
    assert len(nonces) == 100


def test_tampering_any_byte_is_detected_and_out_untouched() -> None:
    key, aad = create_key(32), b"record 7"
    sealed = encrypt(key, b"a short record", aad)
    out = patterned(32)
    gc.collect()
    live = _memory.live_buffers()
    cases = [(flip(sealed, i), aad) for i in range(len(sealed))]
    cases += [(sealed, flip(aad, i)) for i in range(len(aad))]
    cases += [(sealed, b""), (sealed + b"\0", aad), (sealed[:-1], aad)]
    for forged, forged_aad in cases:
        with pytest.raises(DecryptionError):
            decrypt(key, forged, forged_aad)
        with pytest.raises(DecryptionError):
            decrypt_into(key, forged, out, forged_aad)
    with pytest.raises(DecryptionError):
        decrypt(create_key(32), sealed, aad)          # wrong key
    gc.collect()
    assert _memory.live_buffers() == live              # no plaintext left behind
    assert raw(out) == bytes([PATTERN]) * 32
    assert raw(decrypt(key, sealed, aad)) == b"a short record"


@pytest.mark.parametrize("length", range(40))
def test_truncated_is_decryption_error(length: int) -> None:
    with pytest.raises(DecryptionError, match="at least 40 bytes"):
        decrypt(create_key(32), os.urandom(length))
    with pytest.raises(DecryptionError, match="at least 40 bytes"):
        decrypt_into(create_key(32), os.urandom(length), SecureBuffer(8))


def test_empty_message() -> None:
    key = create_key(32)
    sealed = encrypt(key, b"")
    assert len(sealed) == 40
    assert decrypt_into(key, sealed, SecureBuffer(1)) == 0
    with pytest.raises(ValueError, match="nothing to decrypt"):
        decrypt(key, sealed)
    with pytest.raises(DecryptionError):
        decrypt(key, flip(sealed, 30))


def test_out_too_small() -> None:
    key = create_key(32)
    out = patterned(4)
    with pytest.raises(ValueError, match="out is too small: the plaintext is 5 bytes, out holds 4"):
        decrypt_into(key, encrypt(key, b"12345"), out)
    assert raw(out) == bytes([PATTERN]) * 4


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview, lambda b: array.array("B", b)])
def test_any_bytes_like_and_secure_inputs(make: object) -> None:
    key = create_key(32)
    conv = make if callable(make) else bytes
    sealed = encrypt(key, conv(b"message"), conv(b"aad"))
    assert raw(decrypt(key, conv(sealed), conv(b"aad"))) == b"message"
    secret = create_key(16)
    secret.noaccess()
    assert decrypt(key, encrypt(key, secret)) == secret      # a secret never leaves guarded memory
    assert secret.state is Protection.NOACCESS


def test_wrong_types_and_lengths() -> None:
    with pytest.raises(TypeError, match="key must be a SecureBuffer, not bytes"):
        encrypt(b"\0" * 32, b"m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must be 32 bytes long, not 16"):
        encrypt(create_key(16), b"m")
    with pytest.raises(ValueError, match="key must be 32 bytes long, not 16"):
        decrypt(create_key(16), b"\0" * 40)
    with pytest.raises(TypeError, match="message must be a bytes-like object, not str"):
        encrypt(create_key(32), "m")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="out must be a writable SecureBuffer, not a SecureKey"):
        decrypt_into(create_key(32), b"\0" * 41, SecureKey(8))


def test_noaccess_key_borrowed_and_restored() -> None:
    key = create_key(32)
    key.noaccess()
    sealed = encrypt(key, b"m" * 2000)             # the GIL released
    assert key.state is Protection.NOACCESS
    assert raw(decrypt(key, sealed)) == b"m" * 2000
    assert key.state is Protection.NOACCESS


@pytest.mark.parametrize("call", ["encrypt(k, b'm')", "decrypt(k, b'\\0' * 41)",
                                  "decrypt_into(k, b'\\0' * 41, SecureBuffer(8))"])
def test_destroyed_key_is_fatal(call: str) -> None:
    assert_destroyed_key_is_fatal(call)


def test_threads_share_a_key() -> None:
    key = create_key(32)
    key.noaccess()

    def work(slot: int) -> None:
        out = SecureBuffer(3000)
        for i in range(50):
            m = os.urandom((slot * 300 + i * 53) % 3000)
            sealed = encrypt(key, m, b"%d" % slot)
            assert decrypt_into(key, sealed, out, b"%d" % slot) == len(m)
            assert raw(out)[:len(m)] == m

    run_threads(work)
    assert key.state is Protection.NOACCESS
