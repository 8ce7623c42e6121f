"""Crypto against the Python peers, in one run: aead_encrypt, mac,
aead_decrypt / aead_decrypt_into, encrypt / decrypt, sealed boxes (64 bytes)
and a 64 MiB secretstream.

Same key, message and nonce: ours with a READONLY key (borrowed per call, no
protection change) and with a NOACCESS key (two mprotect calls per call),
against pysodium (ctypes) and PyNaCl (cffi), both with a `bytes` key; mac
against pysodium and the standard library's hmac (PyNaCl has no crypto_auth).

    python bench/bench_crypto.py      # the table; bench/run.py includes these rows
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from common import Row, c_floors, compare, table

MESSAGE_SIZE = 64

if TYPE_CHECKING:
    from securekeys import SecureKey


def rows() -> list[Row]:
    import nacl.bindings
    import pysodium  # type: ignore[import-untyped]

    from securekeys import SecureKey, create_key
    from securekeys.crypto import aead_encrypt, mac

    key = create_key(32)
    with key.reading() as view:
        key_bytes = bytes(view)          # the baselines' plain-bytes key (benchmark only)
    noaccess_key = SecureKey(32)         # the same key, copied guarded to guarded via a pipe
    r, w = os.pipe()
    with key.reading() as view:
        os.write(w, view)
    os.close(w)
    noaccess_key.readinto(r)
    os.close(r)
    noaccess_key.noaccess()
    nonce = os.urandom(24)
    message = os.urandom(MESSAGE_SIZE)

    ps_encrypt = pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt
    ps_mac = pysodium.crypto_auth
    # PyNaCl has no crypto_auth: the stdlib's HMAC-SHA-512 truncated to 32 bytes is
    # the same function (HMAC-SHA-512-256 as libsodium defines it).
    def hmac_mac(m: bytes, k: bytes) -> bytes:
        return hmac.digest(k, m, "sha512")[:32]
    nacl_encrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
    expected = ps_encrypt(message, None, nonce, key_bytes)
    for name, result in (("ours", aead_encrypt(key, message, nonce)),
                         ("ours, NOACCESS", aead_encrypt(noaccess_key, message, nonce)),
                         ("PyNaCl", nacl_encrypt(message, None, nonce, key_bytes))):
        if result != expected:
            raise AssertionError(f"{name} disagrees with pysodium")
    if mac(key, message) != ps_mac(message, key_bytes) or hmac_mac(message, key_bytes) != ps_mac(message, key_bytes):
        raise AssertionError("mac disagrees with pysodium")

    op = f"aead_encrypt {MESSAGE_SIZE} B"
    table_rows = [
        compare(f"{op}, READONLY key", lambda: aead_encrypt(key, message, nonce),
                "pysodium, bytes key", lambda: ps_encrypt(message, None, nonce, key_bytes),
                "<= 0.25x (4x faster)", floor="aead_encrypt"),
        compare(f"{op}, READONLY key", lambda: aead_encrypt(key, message, nonce),
                "PyNaCl, bytes key", lambda: nacl_encrypt(message, None, nonce, key_bytes),
                "<= 0.125x (8x faster)", floor="aead_encrypt"),
        compare(f"{op}, NOACCESS key (borrowed per call)", lambda: aead_encrypt(noaccess_key, message, nonce),
                "pysodium, bytes key", lambda: ps_encrypt(message, None, nonce, key_bytes), "-",
                floor="aead_encrypt_noaccess"),
        compare(f"{op}, NOACCESS key (borrowed per call)", lambda: aead_encrypt(noaccess_key, message, nonce),
                "PyNaCl, bytes key", lambda: nacl_encrypt(message, None, nonce, key_bytes), "-",
                floor="aead_encrypt_noaccess"),
        compare(f"mac {MESSAGE_SIZE} B, READONLY key", lambda: mac(key, message),
                "pysodium, bytes key", lambda: ps_mac(message, key_bytes), "-", floor="mac"),
        compare(f"mac {MESSAGE_SIZE} B, READONLY key", lambda: mac(key, message),
                "hmac.digest(sha512)[:32], bytes key", lambda: hmac_mac(message, key_bytes), "-", floor="mac"),
    ]
    if noaccess_key.state.name != "NOACCESS":
        raise AssertionError("the NOACCESS key did not stay NOACCESS")
    return table_rows + decrypt_rows(key, key_bytes) + complete_rows(key, key_bytes) + stream_rows(key, key_bytes)


def peers(ours: str, floor: str, ours_fn: Callable[[], object], nacl_fn: Callable[[], object],
          sodium_fn: Callable[[], object], nacl_goal: str = "-", sodium_goal: str = "-",
          **timing: int) -> list[Row]:
    """One operation of ours (`floor`: its name in bench/floor.c) against
    PyNaCl and against pysodium."""
    return [compare(ours, ours_fn, "PyNaCl, bytes key", nacl_fn, nacl_goal, floor=floor, **timing),
            compare(ours, ours_fn, "pysodium, bytes key", sodium_fn, sodium_goal, floor=floor, **timing)]


def decrypt_rows(key: SecureKey, key_bytes: bytes) -> list[Row]:
    """aead_decrypt (a new guarded plaintext each call) and aead_decrypt_into
    (one reused output), 64 B (issue 14's targets)."""
    import nacl.bindings
    import pysodium  # type: ignore[import-untyped]

    from securekeys import SecureBuffer
    from securekeys.crypto import aead_decrypt, aead_decrypt_into, aead_encrypt

    nonce, message = os.urandom(24), os.urandom(MESSAGE_SIZE)
    box = aead_encrypt(key, message, nonce)
    out = SecureBuffer(MESSAGE_SIZE)
    nacl_decrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    ps_decrypt = pysodium.crypto_aead_xchacha20poly1305_ietf_decrypt
    if aead_decrypt_into(key, box, nonce, out) != MESSAGE_SIZE or aead_decrypt(key, box, nonce) != out:
        raise AssertionError("aead_decrypt and aead_decrypt_into disagree")
    if nacl_decrypt(box, None, nonce, key_bytes) != message or ps_decrypt(box, None, nonce, key_bytes) != message:
        raise AssertionError("the peers do not decrypt")
    return (peers(f"aead_decrypt {MESSAGE_SIZE} B (new guarded plaintext)", "aead_decrypt",
                  lambda: aead_decrypt(key, box, nonce),
                  lambda: nacl_decrypt(box, None, nonce, key_bytes), lambda: ps_decrypt(box, None, nonce, key_bytes),
                  "<= 0.67x (1.5x faster)")
            + peers(f"aead_decrypt_into {MESSAGE_SIZE} B (reused output)", "aead_decrypt_into",
                    lambda: aead_decrypt_into(key, box, nonce, out),
                    lambda: nacl_decrypt(box, None, nonce, key_bytes), lambda: ps_decrypt(box, None, nonce, key_bytes),
                    "<= 0.25x (4x faster)"))


def complete_rows(key: SecureKey, key_bytes: bytes) -> list[Row]:
    """encrypt/decrypt (random nonce in front) against PyNaCl's Aead (the
    same construction and format) and pysodium; sealed boxes."""
    import nacl.public
    import nacl.secret
    import pysodium

    from securekeys.crypto import box_keypair, box_seal, box_seal_open, decrypt, encrypt

    message = os.urandom(MESSAGE_SIZE)
    aead = nacl.secret.Aead(key_bytes)

    def ps_encrypt() -> bytes:
        nonce = pysodium.randombytes(24)
        return bytes(nonce + pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(message, None, nonce, key_bytes))

    sealed = encrypt(key, message)
    if bytes(aead.decrypt(sealed)) != message:
        raise AssertionError("PyNaCl's Aead does not read encrypt's format")
    pair = box_keypair()
    with pair.secret.reading() as view:
        secret_bytes = bytes(view)       # the peers' plain-bytes key (benchmark only)
    nacl_seal = nacl.public.SealedBox(nacl.public.PublicKey(pair.public))
    nacl_open = nacl.public.SealedBox(nacl.public.PrivateKey(secret_bytes))
    box = box_seal(pair.public, message)
    if nacl_open.decrypt(box) != message or box_seal_open(pair, nacl_seal.encrypt(message)).size != MESSAGE_SIZE:
        raise AssertionError("sealed boxes disagree with PyNaCl")
    op = f"{MESSAGE_SIZE} B"
    return (peers(f"encrypt {op} (random nonce)", "encrypt", lambda: encrypt(key, message),
                  lambda: aead.encrypt(message), ps_encrypt, "<= 0.25x (4x faster)")
            + peers(f"decrypt {op} (new guarded plaintext)", "aead_decrypt", lambda: decrypt(key, sealed),
                    lambda: aead.decrypt(sealed),
                    lambda: pysodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[24:], None, sealed[:24],
                                                                                key_bytes))
            + peers(f"box_seal {op}", "box_seal", lambda: box_seal(pair.public, message),
                    lambda: nacl_seal.encrypt(message), lambda: pysodium.crypto_box_seal(message, pair.public),
                    number=300, rounds=9)
            + peers(f"box_seal_open {op}", "box_seal_open", lambda: box_seal_open(pair, box),
                    lambda: nacl_open.decrypt(box),
                    lambda: pysodium.crypto_box_seal_open(box, pair.public, secret_bytes), number=300, rounds=9))


STREAM_BYTES = 64 << 20
STREAM_CHUNK = 64 << 10


def stream_rows(key: SecureKey, key_bytes: bytes) -> list[Row]:
    """64 MiB through a secretstream in 64 KiB chunks, both ways."""
    import nacl.bindings as nb
    import pysodium

    from securekeys import SecureBuffer
    from securekeys.crypto import StreamDecryptor, StreamEncryptor

    chunks = [os.urandom(STREAM_CHUNK)] * (STREAM_BYTES // STREAM_CHUNK)
    last = len(chunks) - 1
    final, message = nb.crypto_secretstream_xchacha20poly1305_TAG_FINAL, nb.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE

    def ours_push() -> None:
        with StreamEncryptor(key) as stream:
            for i, c in enumerate(chunks):
                stream.push(c, final=i == last)

    def nacl_push() -> None:
        state = nb.crypto_secretstream_xchacha20poly1305_state()
        nb.crypto_secretstream_xchacha20poly1305_init_push(state, key_bytes)
        for i, c in enumerate(chunks):
            nb.crypto_secretstream_xchacha20poly1305_push(state, c, None, final if i == last else message)

    def ps_push() -> None:
        state, _ = pysodium.crypto_secretstream_xchacha20poly1305_init_push(key_bytes)
        for i, c in enumerate(chunks):
            pysodium.crypto_secretstream_xchacha20poly1305_push(state, c, None, final if i == last else message)

    with StreamEncryptor(key) as stream:
        boxes = [stream.header] + [stream.push(c, final=i == last) for i, c in enumerate(chunks)]
    out = SecureBuffer(STREAM_CHUNK)

    def ours_pull() -> None:
        with StreamDecryptor(key, boxes[0]) as stream:
            for c in boxes[1:]:
                stream.pull_into(c, out)

    def nacl_pull() -> None:
        state = nb.crypto_secretstream_xchacha20poly1305_state()
        nb.crypto_secretstream_xchacha20poly1305_init_pull(state, boxes[0], key_bytes)
        for c in boxes[1:]:
            nb.crypto_secretstream_xchacha20poly1305_pull(state, c, None)

    def ps_pull() -> None:
        state = pysodium.crypto_secretstream_xchacha20poly1305_init_pull(boxes[0], key_bytes)
        for c in boxes[1:]:
            pysodium.crypto_secretstream_xchacha20poly1305_pull(state, c, None)

    ours_pull()
    ps_pull()
    op = "stream 64 MiB in 64 KiB chunks"
    return (peers(f"{op}: push", "stream_push", ours_push, nacl_push, ps_push, sodium_goal="<= 1.1x",
                  number=1, rounds=5)
            + peers(f"{op}: pull_into (reused output)", "stream_pull_into", ours_pull, nacl_pull, ps_pull,
                    sodium_goal="<= 1.1x", number=1, rounds=5))


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    crypto_rows = rows()
    with tempfile.TemporaryDirectory() as tmp:
        print(table(crypto_rows, c_floors(Path(tmp))))
