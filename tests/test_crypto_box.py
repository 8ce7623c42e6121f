"""Sealed boxes (issue 16, item 3): crypto_box_seal against real libsodium,
with pysodium as the oracle in both directions."""

from __future__ import annotations

import gc
import os
import typing

import pysodium  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_destroyed_key_is_fatal, run_threads
from securekeys import Protection, SecureBuffer, SecureKey, create_key, destroy_key
from securekeys import _memory
from securekeys.crypto import (
    BOX_SEAL_BYTES,
    BoxKeyPair,
    DecryptionError,
    box_keypair,
    box_seal,
    box_seal_open,
)
from test_crypto_into import flip, raw
from test_crypto_kx import LOW_ORDER, secure_seed

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sizes = st.integers(1, 64 * 1024)


@SETTINGS
@given(st.binary(min_size=32, max_size=32))
def test_seeded_keypair_matches_pysodium(seed: bytes) -> None:
    pair = box_keypair(secure_seed(seed))
    pk, sk = pysodium.crypto_box_seed_keypair(seed)
    assert isinstance(pair, BoxKeyPair)
    assert pair.public == pk
    assert type(pair.secret) is SecureKey
    assert pair.secret.state is Protection.READONLY
    assert raw(pair.secret) == sk


@SETTINGS
@given(sizes)
def test_ours_seals_pysodium_opens(size: int) -> None:
    pair, m = box_keypair(), os.urandom(size)
    sealed = box_seal(pair.public, m)
    assert type(sealed) is bytes
    assert len(sealed) == size + BOX_SEAL_BYTES == size + 48
    assert pysodium.crypto_box_seal_open(sealed, pair.public, raw(pair.secret)) == m


@SETTINGS
@given(sizes)
def test_pysodium_seals_ours_opens(size: int) -> None:
    pair, m = box_keypair(), os.urandom(size)
    plain = box_seal_open(pair, pysodium.crypto_box_seal(m, pair.public))
    assert type(plain) is SecureBuffer
    assert plain.state is Protection.READONLY
    assert raw(plain) == m


def test_empty_message() -> None:
    pair = box_keypair()
    sealed = pysodium.crypto_box_seal(b"", pair.public)
    with pytest.raises(ValueError, match="nothing to decrypt") as info:
        box_seal_open(pair, sealed)
    assert not isinstance(info.value, DecryptionError)
    with pytest.raises(DecryptionError):
        box_seal_open(pair, flip(sealed, 40))


def test_tampering_any_byte_and_wrong_key() -> None:
    pair = box_keypair()
    sealed = box_seal(pair.public, b"to the recipient")
    gc.collect()
    live = _memory.live_buffers()
    for i in range(len(sealed)):
        with pytest.raises(DecryptionError):
            box_seal_open(pair, flip(sealed, i))
    with pytest.raises(DecryptionError):
        box_seal_open(box_keypair(), sealed)
    with pytest.raises(DecryptionError):
        box_seal_open(pair, sealed + b"\0")
    gc.collect()
    assert _memory.live_buffers() == live
    assert raw(box_seal_open(pair, sealed)) == b"to the recipient"


@pytest.mark.parametrize("length", [0, 1, 32, 47])
def test_truncated(length: int) -> None:
    with pytest.raises(DecryptionError, match="at least 48 bytes long"):
        box_seal_open(box_keypair(), os.urandom(length))


@pytest.mark.parametrize("point", LOW_ORDER)
def test_degenerate_public_key_is_value_error(point: bytes) -> None:
    with pytest.raises(ValueError, match="rejected the peer's public key"):
        box_seal(point, b"m")


def test_wrong_types_and_lengths() -> None:
    pair = box_keypair()
    with pytest.raises(ValueError, match="public must be 32 bytes long, not 31"):
        box_seal(b"\0" * 31, b"m")
    with pytest.raises(TypeError, match="pair must be a BoxKeyPair, not bytes"):
        box_seal_open(pair.public, b"\0" * 60)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="secret must be a SecureBuffer"):
        box_seal_open(BoxKeyPair(pair.public, b"\0" * 32), b"\0" * 60)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message must be a bytes-like object, not str"):
        box_seal(pair.public, "m")  # type: ignore[arg-type]


def test_secret_message_and_any_bytes_like() -> None:
    pair = box_keypair()
    secret = create_key(32)
    secret.noaccess()
    assert box_seal_open(pair, bytearray(box_seal(memoryview(pair.public), secret))) == secret
    assert secret.state is Protection.NOACCESS


def test_named_tuple_destroy_and_repr() -> None:
    pair = box_keypair()
    assert typing.get_type_hints(BoxKeyPair) == {"public": bytes, "secret": SecureKey}
    assert "secret=<SecureKey size=32" in repr(pair)
    assert raw(pair.secret).hex() not in repr(pair)
    destroy_key(pair)
    assert pair.secret.destroyed


def test_noaccess_secret_borrowed_and_restored() -> None:
    pair = box_keypair()
    pair.secret.noaccess()
    assert raw(box_seal_open(pair, box_seal(pair.public, b"m"))) == b"m"
    assert pair.secret.state is Protection.NOACCESS


@pytest.mark.parametrize("call", ["box_keypair(k)", "box_seal_open(BoxKeyPair(p.public, k), box_seal(p.public, b'm'))"])
def test_destroyed_key_is_fatal(call: str) -> None:
    assert_destroyed_key_is_fatal(call, 'p = box_keypair()')


def test_threads_share_a_key_pair() -> None:
    pair = box_keypair()
    pair.secret.noaccess()

    def work(slot: int) -> None:
        for i in range(30):
            m = os.urandom(1 + (slot * 700 + i * 91) % 3000)
            assert raw(box_seal_open(pair, box_seal(pair.public, m))) == m

    run_threads(work)
    assert pair.secret.state is Protection.NOACCESS
