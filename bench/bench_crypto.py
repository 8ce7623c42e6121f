"""aead_encrypt and mac of 64 bytes against the Python peers, in one run.

Same key, message and nonce: ours with a READONLY key (borrowed per call, no
protection change) and with a NOACCESS key (two mprotect calls per call),
against pysodium (ctypes) and PyNaCl (cffi), both with a `bytes` key; mac
against pysodium and the standard library's hmac (PyNaCl has no crypto_auth).

    python bench/bench_crypto.py      # the table; bench/run.py includes these rows
"""

from __future__ import annotations

import hmac
import os

from common import Row, compare, table

MESSAGE_SIZE = 64


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
                "<= 0.25x (4x faster)"),
        compare(f"{op}, READONLY key", lambda: aead_encrypt(key, message, nonce),
                "PyNaCl, bytes key", lambda: nacl_encrypt(message, None, nonce, key_bytes),
                "<= 0.125x (8x faster)"),
        compare(f"{op}, NOACCESS key (borrowed per call)", lambda: aead_encrypt(noaccess_key, message, nonce),
                "pysodium, bytes key", lambda: ps_encrypt(message, None, nonce, key_bytes), "-"),
        compare(f"{op}, NOACCESS key (borrowed per call)", lambda: aead_encrypt(noaccess_key, message, nonce),
                "PyNaCl, bytes key", lambda: nacl_encrypt(message, None, nonce, key_bytes), "-"),
        compare(f"mac {MESSAGE_SIZE} B, READONLY key", lambda: mac(key, message),
                "pysodium, bytes key", lambda: ps_mac(message, key_bytes), "-"),
        compare(f"mac {MESSAGE_SIZE} B, READONLY key", lambda: mac(key, message),
                "hmac.digest(sha512)[:32], bytes key", lambda: hmac_mac(message, key_bytes), "-"),
    ]
    if noaccess_key.state.name != "NOACCESS":
        raise AssertionError("the NOACCESS key did not stay NOACCESS")
    return table_rows


if __name__ == "__main__":
    print(table(rows()))
