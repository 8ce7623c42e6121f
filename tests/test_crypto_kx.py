"""Key exchange (issue 16, item 2): crypto_kx against real libsodium, with
pysodium as the oracle in both directions."""

from __future__ import annotations

import os
import typing

import pysodium  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import securekeys
from conftest import assert_destroyed_key_is_fatal, run_threads
from securekeys import Protection, SecureBuffer, SecureKey, create_key, destroy_key
from securekeys.crypto import (
    KxKeyPair,
    SessionKeys,
    kx_client_session_keys,
    kx_keypair,
    kx_server_session_keys,
)
from test_crypto_into import raw

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.binary(min_size=32, max_size=32)


def secure_seed(seed: bytes) -> SecureBuffer:
    buf = SecureBuffer(32)
    with buf.writing() as view:
        view[:] = seed
    return buf


@SETTINGS
@given(seeds)
def test_seeded_keypair_matches_pysodium(seed: bytes) -> None:
    pair = kx_keypair(secure_seed(seed))
    pk, sk = pysodium.crypto_kx_seed_keypair(seed)
    assert isinstance(pair, KxKeyPair)
    assert pair.public == pk
    assert type(pair.secret) is SecureKey
    assert pair.secret.state is Protection.READONLY
    assert raw(pair.secret) == sk


def check_keys(keys: SessionKeys) -> None:
    assert isinstance(keys, SessionKeys)
    for key in keys:
        assert type(key) is SecureKey
        assert key.state is Protection.READONLY
        assert len(key) == 32


@SETTINGS
@given(seeds, seeds)
def test_session_keys_match_pysodium_both_ways(client_seed: bytes, server_seed: bytes) -> None:
    client, server = kx_keypair(secure_seed(client_seed)), kx_keypair(secure_seed(server_seed))
    cpk, csk = pysodium.crypto_kx_seed_keypair(client_seed)
    spk, ssk = pysodium.crypto_kx_seed_keypair(server_seed)
    ours_client = kx_client_session_keys(client, spk)
    ours_server = kx_server_session_keys(server, cpk)
    check_keys(ours_client)
    check_keys(ours_server)
    # ours against the oracle's peer, in both roles
    assert (raw(ours_client.rx), raw(ours_client.tx)) == pysodium.crypto_kx_client_session_keys(cpk, csk, spk)
    assert (raw(ours_server.rx), raw(ours_server.tx)) == pysodium.crypto_kx_server_session_keys(spk, ssk, cpk)
    assert ours_client.rx == ours_server.tx
    assert ours_client.tx == ours_server.rx
    assert ours_client.rx != ours_client.tx


def test_random_keypairs_agree() -> None:
    client, server = kx_keypair(), kx_keypair()
    assert client.public != server.public
    c = kx_client_session_keys(client, server.public)
    s = kx_server_session_keys(server, client.public)
    assert c.rx == s.tx and c.tx == s.rx
    # the oracle, holding only public keys and the server's secret, agrees
    rx, tx = pysodium.crypto_kx_server_session_keys(server.public, raw(server.secret), client.public)
    assert (raw(s.rx), raw(s.tx)) == (rx, tx)


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview])
def test_public_key_any_bytes_like(make: typing.Callable[[bytes], typing.Any]) -> None:
    client, server = kx_keypair(), kx_keypair()
    assert kx_client_session_keys(client, make(server.public)).tx == kx_client_session_keys(client, server.public).tx


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_public_key_length(length: int) -> None:
    with pytest.raises(ValueError, match=f"server_public must be 32 bytes long, not {length}"):
        kx_client_session_keys(kx_keypair(), b"\1" * length)
    with pytest.raises(ValueError, match=f"client_public must be 32 bytes long, not {length}"):
        kx_server_session_keys(kx_keypair(), b"\1" * length)


# Low-order points of Curve25519: X25519 with any of them gives all zeros.
LOW_ORDER = [bytes(32), b"\1" + bytes(31),
             bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]


@pytest.mark.parametrize("point", LOW_ORDER)
def test_degenerate_peer_key_is_value_error(point: bytes) -> None:
    before = securekeys._memory.live_buffers()
    with pytest.raises(ValueError, match="rejected the peer's public key"):
        kx_client_session_keys(kx_keypair(), point)
    with pytest.raises(ValueError, match="rejected the peer's public key"):
        kx_server_session_keys(kx_keypair(), point)
    import gc
    gc.collect()
    assert securekeys._memory.live_buffers() == before      # no half-made session key


def test_wrong_types() -> None:
    pair = kx_keypair()
    with pytest.raises(TypeError, match="expected a KxKeyPair, not tuple"):
        kx_client_session_keys((pair.public, pair.secret), pair.public)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="secret must be a SecureBuffer, not bytes"):
        kx_client_session_keys(KxKeyPair(pair.public, b"\0" * 32), pair.public)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be 32 bytes long, not 16"):
        kx_keypair(create_key(16))
    with pytest.raises(TypeError, match="seed must be a SecureBuffer"):
        kx_keypair(b"\0" * 32)  # type: ignore[arg-type]


def test_named_tuples_destroy_and_repr() -> None:
    pair = kx_keypair()
    keys = kx_client_session_keys(pair, kx_keypair().public)
    assert typing.get_type_hints(KxKeyPair) == {"public": bytes, "secret": SecureKey}
    assert typing.get_type_hints(SessionKeys) == {"rx": SecureKey, "tx": SecureKey}
    for shown in (repr(pair), repr(keys)):
        assert "<SecureKey size=32" in shown
    for secret in (pair.secret, keys.rx, keys.tx):
        assert raw(secret).hex() not in repr(pair) + repr(keys)
    destroy_key(keys)
    assert keys.rx.destroyed and keys.tx.destroyed
    destroy_key(pair)
    assert pair.secret.destroyed


def test_noaccess_secret_and_seed_borrowed_and_restored() -> None:
    seed = create_key(32)
    seed.noaccess()
    pair = kx_keypair(seed)
    assert seed.state is Protection.NOACCESS
    pair.secret.noaccess()
    keys = kx_client_session_keys(pair, kx_keypair().public)
    assert pair.secret.state is Protection.NOACCESS
    check_keys(keys)


@pytest.mark.parametrize("call", ["kx_keypair(k)", "kx_client_session_keys(KxKeyPair(p.public, k), p.public)",
                                  "kx_server_session_keys(KxKeyPair(p.public, k), p.public)"])
def test_destroyed_key_is_fatal(call: str) -> None:
    assert_destroyed_key_is_fatal(call, 'p = kx_keypair()')


def test_threads_share_a_server_key() -> None:
    server = kx_keypair()
    server.secret.noaccess()

    def work(slot: int) -> None:
        for _ in range(20):
            client = kx_keypair()
            c = kx_client_session_keys(client, server.public)
            s = kx_server_session_keys(server, client.public)
            assert c.rx == s.tx and c.tx == s.rx

    run_threads(work)
    assert server.secret.state is Protection.NOACCESS
