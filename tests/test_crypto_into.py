"""aead_decrypt_into: decryption into a caller's reused SecureBuffer (issue 14,
item 4), against real libsodium with pysodium as the oracle."""

from __future__ import annotations

import gc
import os

import pysodium  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_dies, run_threads
from securekeys import Protection, SecureBuffer, create_key
from securekeys import _memory
from securekeys.crypto import DecryptionError, aead_decrypt_into, aead_encrypt

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATTERN = 0xA5


def raw(buf: SecureBuffer) -> bytes:
    with buf.reading() as view:
        return bytes(view)


def patterned(size: int) -> SecureBuffer:
    """A READWRITE buffer full of PATTERN: what a forged message must leave."""
    buf = SecureBuffer(size)
    with buf.writing() as view:
        view[:] = bytes([PATTERN]) * size
    return buf


def key_bytes(key: SecureBuffer) -> bytes:
    return raw(key)      # the oracle's interface, never the library's


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


@SETTINGS
@given(st.integers(0, 64 * 1024), st.integers(0, 64), st.binary(max_size=32))
def test_decrypts_pysodium_ciphertext_in_place(size: int, spare: int, aad: bytes) -> None:
    key, nonce = create_key(32), os.urandom(24)
    m = os.urandom(size)
    c = pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(m, aad, nonce, key_bytes(key))
    out = patterned(size + spare or 1)
    assert aead_decrypt_into(key, c, nonce, out, aad) == size
    got = raw(out)
    assert got[:size] == m
    assert got[size:] == bytes([PATTERN]) * (len(out) - size)   # the rest left as it was
    assert out.state is Protection.READWRITE


def test_one_buffer_reused_across_messages() -> None:
    key, out = create_key(32), SecureBuffer(100)
    for size in (100, 3, 64, 0, 1):
        nonce, m = os.urandom(24), os.urandom(size)
        assert aead_decrypt_into(key, aead_encrypt(key, m, nonce), nonce, out) == size
        assert raw(out)[:size] == m


@pytest.mark.parametrize("size", [0, 1, 13])
def test_forged_leaves_out_untouched(size: int) -> None:
    # libsodium zeroes its output on a wrong tag; ours checks the tag first.
    key, nonce, aad = create_key(32), os.urandom(24), os.urandom(5)
    c = aead_encrypt(key, os.urandom(size), nonce, aad)
    out = patterned(32)
    forged = [(flip(c, i), nonce, aad) for i in range(len(c))]
    forged += [(c, flip(nonce, i), aad) for i in range(len(nonce))]
    forged += [(c, nonce, flip(aad, i)) for i in range(len(aad))]
    forged += [(c, nonce, b""), (c + b"\0", nonce, aad), (c[:-1], nonce, aad)]
    for fc, fn, fa in forged:
        with pytest.raises(DecryptionError):
            aead_decrypt_into(key, fc, fn, out, fa)
        assert raw(out) == bytes([PATTERN]) * 32
    with pytest.raises(DecryptionError):
        aead_decrypt_into(create_key(32), c, nonce, out, aad)
    assert raw(out) == bytes([PATTERN]) * 32


def test_libsodium_alone_would_zero_out() -> None:
    # The control for the test above: pysodium's decrypt into a buffer is not
    # reachable, so show through ctypes that libsodium writes on a wrong tag.
    import ctypes
    import ctypes.util
    sodium = ctypes.CDLL(ctypes.util.find_library("sodium"))
    k, n = os.urandom(32), os.urandom(24)
    c = pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(b"x" * 8, None, n, k)
    out = ctypes.create_string_buffer(b"\xa5" * 8, 8)
    rc = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, None, None, flip(c, 0), ctypes.c_ulonglong(len(c)),
                                                           None, ctypes.c_ulonglong(0), n, k)
    assert rc != 0
    assert out.raw != b"\xa5" * 8


@pytest.mark.parametrize("length", range(16))
def test_shorter_than_the_tag(length: int) -> None:
    out = patterned(8)
    with pytest.raises(DecryptionError, match="at least 16 bytes"):
        aead_decrypt_into(create_key(32), b"\0" * length, os.urandom(24), out)
    assert raw(out) == bytes([PATTERN]) * 8


def test_out_too_small_is_value_error_and_nothing_written() -> None:
    key, nonce = create_key(32), os.urandom(24)
    c = aead_encrypt(key, b"twelve bytes", nonce)
    out = patterned(11)
    gc.collect()
    live = _memory.live_buffers()
    with pytest.raises(ValueError, match="out is too small: the plaintext is 12 bytes, out holds 11"):
        aead_decrypt_into(key, c, nonce, out)
    assert not isinstance(ValueError(), DecryptionError)
    assert raw(out) == bytes([PATTERN]) * 11
    gc.collect()
    assert _memory.live_buffers() == live


def test_empty_plaintext_is_zero_and_checked() -> None:
    key, nonce = create_key(32), os.urandom(24)
    tag_only = aead_encrypt(key, b"", nonce)
    out = patterned(4)
    assert aead_decrypt_into(key, tag_only, nonce, out) == 0
    with pytest.raises(DecryptionError):
        aead_decrypt_into(key, flip(tag_only, 0), nonce, out)
    assert raw(out) == bytes([PATTERN]) * 4


def test_wrong_out_arguments() -> None:
    key, nonce = create_key(32), os.urandom(24)
    c = aead_encrypt(key, b"m", nonce)
    with pytest.raises(TypeError, match="out must be a SecureBuffer, not bytearray"):
        aead_decrypt_into(key, c, nonce, bytearray(8))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a SecureKey"):
        aead_decrypt_into(key, c, nonce, create_key(8))
    rw_key = SecureBuffer(32)
    with pytest.raises(ValueError, match="out must not be the key"):
        aead_decrypt_into(rw_key, c, nonce, rw_key)
    with pytest.raises(TypeError, match="key must be a SecureBuffer"):
        aead_decrypt_into(b"\0" * 32, c, nonce, SecureBuffer(8))  # type: ignore[arg-type]


def test_noaccess_key_and_out_are_borrowed_and_restored() -> None:
    key, nonce = create_key(32), os.urandom(24)
    c = aead_encrypt(key, b"secret", nonce)
    out = SecureBuffer(16)
    key.noaccess()
    out.noaccess()
    assert aead_decrypt_into(key, c, nonce, out) == 6
    assert key.state is Protection.NOACCESS
    assert out.state is Protection.NOACCESS
    with pytest.raises(DecryptionError):
        aead_decrypt_into(key, flip(c, 2), nonce, out)
    assert out.state is Protection.NOACCESS
    assert raw(out)[:6] == b"secret"


def test_ciphertext_in_the_out_buffer_itself() -> None:
    # Decrypting a buffer into itself: the ciphertext is snapshotted first.
    key, nonce = create_key(32), os.urandom(24)
    c = aead_encrypt(key, b"in place", nonce)
    buf = SecureBuffer(len(c))
    with buf.writing() as view:
        view[:] = c
    assert aead_decrypt_into(key, buf, nonce, buf) == 8
    assert raw(buf)[:8] == b"in place"


@pytest.mark.parametrize("which", ["key", "out"])
def test_destroyed_key_or_out_is_fatal(which: str) -> None:
    assert_dies(f"""
        import os
        from securekeys import SecureBuffer, create_key
        from securekeys.crypto import aead_encrypt, aead_decrypt_into
        key, nonce, out = create_key(32), os.urandom(24), SecureBuffer(8)
        c = aead_encrypt(key, b"m", nonce)
        {which}.destroy()
        aead_decrypt_into(key, c, nonce, out)
        print("REACHED")
    """, __import__("signal").SIGABRT, "destroyed")


def test_threads_share_a_key_each_with_its_out() -> None:
    key = create_key(32)
    key.noaccess()

    def work(slot: int) -> None:
        out = SecureBuffer(4096)
        for i in range(50):
            size = (slot * 500 + i * 37) % 4096
            m, n = os.urandom(size), os.urandom(24)
            assert aead_decrypt_into(key, aead_encrypt(key, m, n), n, out) == size
            assert raw(out)[:size] == m

    run_threads(work)
    assert key.state is Protection.NOACCESS
