"""aead_encrypt of 64 bytes against the Python peers, in one run.

Same key, message and nonce: ours with a READONLY key (borrowed per call, no
protection change) and with a NOACCESS key (two mprotect calls per call),
against pysodium (ctypes) and PyNaCl (cffi), both with a `bytes` key.

    python bench/bench_crypto.py      # the table; bench/run.py includes these rows
"""

from __future__ import annotations

import os

from common import Row, compare, table

MESSAGE_SIZE = 64


def rows() -> list[Row]:
    import nacl.bindings
    import pysodium  # type: ignore[import-untyped]

    from securekeys import SecureKey, create_key
    from securekeys.crypto import aead_encrypt

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
    nacl_encrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
    expected = ps_encrypt(message, None, nonce, key_bytes)
    for name, result in (("ours", aead_encrypt(key, message, nonce)),
                         ("ours, NOACCESS", aead_encrypt(noaccess_key, message, nonce)),
                         ("PyNaCl", nacl_encrypt(message, None, nonce, key_bytes))):
        if result != expected:
            raise AssertionError(f"{name} disagrees with pysodium")

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
    ]
    if noaccess_key.state.name != "NOACCESS":
        raise AssertionError("the NOACCESS key did not stay NOACCESS")
    return table_rows


if __name__ == "__main__":
    print(table(rows()))
