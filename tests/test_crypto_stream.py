"""Streams (issue 16, item 4): crypto_secretstream_xchacha20poly1305 against
real libsodium, with pysodium as the oracle in both directions."""

from __future__ import annotations

import gc
import os

import pysodium  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_destroyed_key_is_fatal, run_threads
from securekeys import Protection, SecureBuffer, create_key
from securekeys import _memory
from securekeys.crypto import (
    STREAM_HEADER_BYTES,
    STREAM_OVERHEAD_BYTES,
    DecryptionError,
    StreamDecryptor,
    StreamEncryptor,
)
from test_crypto_into import PATTERN, flip, patterned, raw

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TAG_MESSAGE = pysodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = pysodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
chunks = st.lists(st.integers(0, 16 * 1024), min_size=1, max_size=4)


def encrypted(key: SecureBuffer, messages: list[bytes], aad: bytes = b"") -> tuple[bytes, list[bytes]]:
    with StreamEncryptor(key) as enc:
        out = [enc.push(m, aad=aad, final=i == len(messages) - 1) for i, m in enumerate(messages)]
        return enc.header, out


@SETTINGS
@given(chunks, st.binary(max_size=16))
def test_ours_pushes_pysodium_pulls(sizes: list[int], aad: bytes) -> None:
    key = create_key(32)
    messages = [os.urandom(n) for n in sizes]
    header, boxes = encrypted(key, messages, aad)
    assert len(header) == STREAM_HEADER_BYTES == 24
    state = pysodium.crypto_secretstream_xchacha20poly1305_init_pull(header, raw(key))
    for i, (m, c) in enumerate(zip(messages, boxes)):
        assert type(c) is bytes and len(c) == len(m) + STREAM_OVERHEAD_BYTES
        plain, tag = pysodium.crypto_secretstream_xchacha20poly1305_pull(state, c, aad)
        assert plain == m
        assert tag == (TAG_FINAL if i == len(messages) - 1 else TAG_MESSAGE)


@SETTINGS
@given(chunks, st.binary(max_size=16))
def test_pysodium_pushes_ours_pulls(sizes: list[int], aad: bytes) -> None:
    key = create_key(32)
    state, header = pysodium.crypto_secretstream_xchacha20poly1305_init_push(raw(key))
    messages = [os.urandom(n) for n in sizes]
    tags = [TAG_MESSAGE] * (len(sizes) - 1) + [TAG_FINAL]
    boxes = [pysodium.crypto_secretstream_xchacha20poly1305_push(state, m, aad, t) for m, t in zip(messages, tags)]
    out = patterned(16 * 1024 + 1)
    with StreamDecryptor(key, header) as dec:
        for i, (m, c) in enumerate(zip(messages, boxes)):
            final = i == len(messages) - 1
            if m and i % 2:
                plain, last = dec.pull(c, aad=aad)
                assert plain.state is Protection.READONLY
                assert (raw(plain), last) == (m, final)
            else:
                assert dec.pull_into(c, out, aad=aad) == (len(m), final)
                assert raw(out)[:len(m)] == m
        assert dec.finished


def test_tampering_any_byte_leaves_stream_and_out_unchanged() -> None:
    key = create_key(32)
    header, boxes = encrypted(key, [b"first message", b"second"], b"ad")
    out = patterned(32)
    dec = StreamDecryptor(key, header)
    cases = [(flip(boxes[0], i), b"ad") for i in range(len(boxes[0]))]
    cases += [(boxes[0], b"ae"), (boxes[0], b""), (boxes[0] + b"\0", b"ad"), (boxes[0][:-1], b"ad")]
    for forged, aad in cases:
        with pytest.raises(DecryptionError):
            dec.pull_into(forged, out, aad=aad)
        assert raw(out) == bytes([PATTERN]) * 32
    with pytest.raises(DecryptionError):
        dec.pull(boxes[1], aad=b"ad")                      # reordered: the second first
    assert dec.pull_into(boxes[0], out, aad=b"ad") == (13, False)   # the stream was unchanged
    assert dec.pull_into(boxes[1], out, aad=b"ad") == (6, True)
    dec.close()


def test_wrong_key_or_header() -> None:
    key = create_key(32)
    header, boxes = encrypted(key, [b"m"])
    with pytest.raises(DecryptionError):
        StreamDecryptor(create_key(32), header).pull(boxes[0])
    with pytest.raises(DecryptionError):
        StreamDecryptor(key, flip(header, 0)).pull(boxes[0])
    with pytest.raises(ValueError, match="header must be 24 bytes long, not 23"):
        StreamDecryptor(key, header[:-1])


@pytest.mark.parametrize("length", [0, 1, 16])
def test_shorter_than_overhead(length: int) -> None:
    key = create_key(32)
    dec = StreamDecryptor(key, encrypted(key, [b"m"])[0])
    with pytest.raises(DecryptionError, match="at least 17 bytes"):
        dec.pull(b"\0" * length)


def test_truncated_stream_is_value_error_at_close() -> None:
    key = create_key(32)
    header, boxes = encrypted(key, [b"one", b"two", b"three"])
    dec = StreamDecryptor(key, header)
    dec.pull(boxes[0])
    dec.pull(boxes[1])
    with pytest.raises(ValueError, match="closed before its final message"):
        dec.close()
    assert dec.closed
    dec.close()                                    # once is enough
    with pytest.raises(ValueError, match="before its final message"):
        with StreamDecryptor(key, header) as d:
            d.pull(boxes[0])
    with pytest.raises(ValueError, match="before its final message"):
        with StreamEncryptor(key) as e:
            e.push(b"never final")


def test_an_exception_inside_the_block_wins() -> None:
    key = create_key(32)
    with pytest.raises(KeyError):
        with StreamEncryptor(key) as enc:
            enc.push(b"x")
            raise KeyError("the caller's error")
    assert enc.closed


def test_use_after_final_or_close() -> None:
    key = create_key(32)
    enc = StreamEncryptor(key)
    last = enc.push(b"end", final=True)
    assert enc.finished
    with pytest.raises(ValueError, match="finished"):
        enc.push(b"more")
    enc.close()
    with pytest.raises(ValueError, match="closed"):
        enc.rekey()
    dec = StreamDecryptor(key, enc.header)
    assert dec.pull(last)[1] is True
    with pytest.raises(ValueError, match="finished"):
        dec.pull(last)
    dec.close()
    with pytest.raises(ValueError, match="closed"):
        dec.pull(last)


def test_empty_messages() -> None:
    key = create_key(32)
    header, boxes = encrypted(key, [b"", b"", b""])
    dec = StreamDecryptor(key, header)
    assert dec.pull_into(boxes[0], SecureBuffer(1)) == (0, False)
    with pytest.raises(ValueError, match="nothing to decrypt") as info:
        dec.pull(boxes[1])
    assert not isinstance(info.value, DecryptionError)
    with pytest.raises(ValueError, match="nothing to decrypt"):
        dec.pull(boxes[2])                         # consumed, and it was the final one
    assert dec.finished
    dec.close()


def test_out_too_small_leaves_stream_unchanged() -> None:
    key = create_key(32)
    header, boxes = encrypted(key, [b"12345"])
    dec = StreamDecryptor(key, header)
    out = patterned(4)
    with pytest.raises(ValueError, match="out is too small: the plaintext is 5 bytes, out holds 4"):
        dec.pull_into(boxes[0], out)
    assert raw(out) == bytes([PATTERN]) * 4
    assert dec.pull_into(boxes[0], SecureBuffer(5)) == (5, True)


def test_rekey_on_both_ends() -> None:
    key = create_key(32)
    enc = StreamEncryptor(key)
    first = enc.push(b"before")
    enc.rekey()
    second = enc.push(b"after", final=True)
    dec = StreamDecryptor(key, enc.header)
    assert raw(dec.pull(first)[0]) == b"before"
    lone = StreamDecryptor(key, enc.header)
    lone.pull(first)
    with pytest.raises(DecryptionError):
        lone.pull(second)                          # one end did not rekey
    dec.rekey()
    assert raw(dec.pull(second)[0]) == b"after"


def test_state_is_guarded_noaccess_and_wiped() -> None:
    key = create_key(32)
    gc.collect()
    live = _memory.live_buffers()
    enc = StreamEncryptor(key)
    assert _memory.live_buffers() == live + 1      # the state, in guarded memory
    enc.push(b"x", final=True)
    enc.close()
    assert _memory.live_buffers() == live          # destroyed at close
    StreamDecryptor(key, enc.header)               # collected at once
    gc.collect()
    assert _memory.live_buffers() == live


def test_noaccess_key_borrowed_and_restored() -> None:
    key = create_key(32)
    key.noaccess()
    header, boxes = encrypted(key, [b"m" * 5000])
    assert key.state is Protection.NOACCESS
    assert raw(StreamDecryptor(key, header).pull(boxes[0])[0]) == b"m" * 5000
    assert key.state is Protection.NOACCESS


def test_wrong_types() -> None:
    with pytest.raises(TypeError, match="key must be a SecureBuffer, not bytes"):
        StreamEncryptor(b"\0" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must be 32 bytes long, not 16"):
        StreamDecryptor(create_key(16), b"\0" * 24)
    enc = StreamEncryptor(create_key(32))
    with pytest.raises(TypeError, match="message must be a bytes-like object, not str"):
        enc.push("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["StreamEncryptor(k)", "StreamDecryptor(k, bytes(24))"])
def test_destroyed_key_is_fatal(call: str) -> None:
    assert_destroyed_key_is_fatal(call)


def test_threads_share_a_key_each_with_its_stream() -> None:
    key = create_key(32)
    key.noaccess()

    def work(slot: int) -> None:
        messages = [os.urandom((slot * 999 + i * 377) % 5000) for i in range(20)]
        header, boxes = encrypted(key, messages)
        out = SecureBuffer(5000)
        with StreamDecryptor(key, header) as dec:
            for m, c in zip(messages, boxes):
                assert dec.pull_into(c, out)[0] == len(m)
                assert raw(out)[:len(m)] == m

    run_threads(work)
    assert key.state is Protection.NOACCESS
