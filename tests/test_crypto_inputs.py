"""Every public input a call reads more than once is snapshotted once, and
every snapshot is wiped or guarded.

libsodium reads some inputs twice within one call (crypto_kx: the peer's
public key for the scalar multiplication, then for the hash), and our own
decrypt_into functions read the nonce and the AAD twice (a tag check, then a
decryption).  A thread that flips one byte of such an input makes the two
reads disagree.  The verdicts here cannot fail for correct code, whatever
the timing: with one byte flipping, a snapshot holds one of the two values,
so every answer must be the answer for one of them.  (On the code before
the snapshots, the counts of wrong answers were in the tens per run.)

The snapshots themselves: a copy of a guarded input (a memoryview of a
SecureBuffer, a slice of one) lives in guarded memory, and a copy in
ordinary memory is wiped before it is freed.  A fresh interpreter scans its
own readable memory for the input's bytes after the call.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from typing import cast

import pytest
from typing_extensions import Buffer

from conftest import run_python
from test_crypto_toctou import _peak_heap_during
from securekeys import SecureBuffer, _memory, create_key
from securekeys.crypto import (
    DecryptionError,
    aead_decrypt_into,
    aead_encrypt,
    decrypt_into,
    encrypt,
    kx_client_session_keys,
    kx_keypair,
    kx_server_session_keys,
    sign,
    signing_keypair,
    verify,
)

ROUNDS = 300


def raw(buf: SecureBuffer) -> bytes:
    with buf.reading() as view:
        return bytes(view)


class Flipper:
    """A thread that flips `mask` into buf[index] again and again, handing
    the GIL over after each flip.  Entering waits for the first flip."""

    def __init__(self, buf: bytearray, index: int, mask: int = 0x01) -> None:
        self.buf, self.index, self.mask = buf, index, mask
        self.stop = threading.Event()
        self.started = threading.Event()
        self.original = buf[index]
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.buf[self.index] ^= self.mask
            self.started.set()
            time.sleep(0)

    def __enter__(self) -> Flipper:
        self.thread.start()
        self.started.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.buf[self.index] = self.original


def flipped(value: bytes, index: int, mask: int = 0x01) -> bytes:
    other = bytearray(value)
    other[index] ^= mask
    return bytes(other)


# -- crypto_kx reads the peer's public key twice -----------------------------------

@pytest.mark.parametrize("side", ["client", "server"])
def test_session_keys_belong_to_one_peer_key_while_a_thread_flips_it(side: str) -> None:
    session_keys = kx_client_session_keys if side == "client" else kx_server_session_keys
    ours, peer = kx_keypair(), kx_keypair()

    def keys_for(public: bytes | bytearray) -> tuple[bytes, bytes]:
        keys = session_keys(ours, public)
        result = raw(keys.rx), raw(keys.tx)
        keys.rx.destroy()
        keys.tx.destroy()
        return result

    right = {keys_for(peer.public), keys_for(flipped(peer.public, 7))}
    buffer = bytearray(peer.public)
    wrong = 0
    with Flipper(buffer, 7):
        for _ in range(ROUNDS):
            wrong += keys_for(buffer) not in right
    assert wrong == 0, f"{wrong} of {ROUNDS} calls gave session keys for no key the buffer held"


def test_own_public_key_read_once_gives_keys_for_one_value() -> None:
    # libsodium hashes our own public key once (no snapshot needed): the keys
    # still belong to one of the values.
    ours, peer = kx_keypair(), kx_keypair()

    def keys_for(public: bytes | bytearray) -> bytes:
        # A mutable buffer where the pair's type says bytes: the case tested.
        keys = kx_client_session_keys(type(ours)(cast(bytes, public), ours.secret), peer.public)
        result = raw(keys.rx) + raw(keys.tx)
        keys.rx.destroy()
        keys.tx.destroy()
        return result

    right = {keys_for(ours.public), keys_for(flipped(ours.public, 3))}
    buffer = bytearray(ours.public)
    with Flipper(buffer, 3):
        wrong = sum(keys_for(buffer) not in right for _ in range(ROUNDS // 3))
    assert wrong == 0


# -- decrypt_into reads the nonce and the AAD in two passes ------------------------

BIG = 1 << 20      # the GIL is released and the two passes are far apart


def _check_into(decrypt: Callable[[SecureBuffer], int], message: bytes, out: SecureBuffer) -> str:
    """One call: "ok" (the plaintext), "forged" (`out` left as it was) or
    "wrong" (anything else: `out` changed by a message called forged)."""
    blank = b"\xa5" * len(message)
    with out.writing() as view:
        view[:] = blank
    try:
        n = decrypt(out)
    except DecryptionError:
        return "forged" if raw(out) == blank else "wrong"
    return "ok" if n == len(message) and raw(out) == message else "wrong"


@pytest.mark.parametrize("target", ["nonce", "aad"])
def test_aead_decrypt_into_answers_for_one_value_while_a_thread_flips(target: str) -> None:
    key, message = create_key(32), os.urandom(BIG)
    nonce, aad = bytearray(os.urandom(24)), bytearray(os.urandom(32))
    box = aead_encrypt(key, message, bytes(nonce), bytes(aad))
    out = SecureBuffer(BIG)
    seen = {"ok": 0, "forged": 0, "wrong": 0}
    with Flipper(nonce if target == "nonce" else aad, 5):
        for _ in range(2 * ROUNDS):
            seen[_check_into(lambda o: aead_decrypt_into(key, box, nonce, o, aad), message, out)] += 1
    assert seen["wrong"] == 0, seen


def test_decrypt_into_answers_for_one_aad_while_a_thread_flips_it() -> None:
    key, message = create_key(32), os.urandom(BIG)
    aad = bytearray(os.urandom(32))
    sealed = encrypt(key, message, bytes(aad))
    out = SecureBuffer(BIG)
    seen = {"ok": 0, "forged": 0, "wrong": 0}
    with Flipper(aad, 5):
        for _ in range(2 * ROUNDS):
            seen[_check_into(lambda o: decrypt_into(key, sealed, o, aad), message, out)] += 1
    assert seen["wrong"] == 0, seen


def test_snapshots_of_small_inputs_change_no_answer() -> None:
    # Every kind of input the snapshots take: bytes, a bytearray, a
    # memoryview of bytes, views and slices of a SecureBuffer's view (whose
    # guarded snapshots are destroyed after the call), an empty slice.
    key, message = create_key(32), b"attack at dawn"
    nonce, aad = os.urandom(24), os.urandom(40)
    box = aead_encrypt(key, message, nonce, aad)
    guarded = SecureBuffer(64)
    with guarded.writing() as view:
        view[:24] = nonce
        view[24:] = aad
    out = SecureBuffer(len(message))
    pair = signing_keypair()
    signature = sign(pair.secret, message)
    gc.collect()
    live = _memory.live_buffers()
    with guarded.reading() as view:
        cases: list[tuple[Buffer, Buffer]] = [
            (nonce, aad), (bytearray(nonce), memoryview(aad)), (view[:24], view[24:]),
            (memoryview(view)[:24], memoryview(view[24:])),
        ]
        for n, a in cases:
            assert aead_decrypt_into(key, box, n, out, a) == len(message)
            assert raw(out) == message
        assert sign(pair.secret, view[:0]) == sign(pair.secret, b"")
    with guarded.writing() as view:
        view[:] = signature
    with guarded.reading() as view:
        assert verify(pair.public, message, view)
        assert verify(pair.public, message, memoryview(view))
        assert verify(memoryview(pair.public), message, bytearray(view))
    gc.collect()
    assert _memory.live_buffers() == live      # no snapshot left behind


# -- snapshots are guarded or wiped --------------------------------------------------


@pytest.mark.parametrize("shape", ["view", "slice", "memoryview of a view"])
def test_a_view_of_guarded_memory_is_snapshotted_in_guarded_memory(shape: str) -> None:
    size = 4 << 20
    pair, message = signing_keypair(), create_key(size)
    with message.reading() as view:
        given = {"view": view, "slice": view[1:], "memoryview of a view": memoryview(view)[1:]}[shape]
        expected = sign(pair.secret, bytes(given))
        assert _peak_heap_during(lambda: sign(pair.secret, given)) < size // 8
        assert sign(pair.secret, given) == expected
    assert _peak_heap_during(lambda: sign(pair.secret, bytearray(size))) >= size   # the heap case


# The child: fill a buffer from the kernel (no copy of its bytes in ordinary
# memory), make the call, then read every readable mapping through
# /proc/self/mem into one scratch mapping and look for a 64-byte piece of the
# buffer, from its middle (malloc's free lists overwrite a freed block's
# first 16 bytes).  The piece at the buffer's own address does not count.
SCAN = """
import ctypes, mmap, os
from securekeys import SecureBuffer, create_key
from securekeys.crypto import aead_decrypt, aead_encrypt, sign, signing_keypair

CHUNK = 1 << 20
scratch = mmap.mmap(-1, 2 * CHUNK)
scratch_at = ctypes.addressof(ctypes.c_char.from_buffer(scratch))
scratch_view = memoryview(scratch)

def address(buffer):
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))

def copies(needle, own):
    with open("/proc/self/maps", "rb") as maps:
        regions = [line.split()[:2] for line in maps]
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    found = []
    try:
        for span, perms in regions:
            if not perms.startswith(b"r"):
                continue
            lo, hi = (int(x, 16) for x in span.split(b"-"))
            for at in range(lo, hi, CHUNK):
                try:
                    got = os.preadv(fd, [scratch_view[:min(CHUNK + len(needle), hi - at)]], at)
                except OSError:
                    break
                pos = scratch.find(needle, 0, got)
                while pos != -1:
                    where = at + pos
                    if where != own and not scratch_at <= where < scratch_at + len(scratch):
                        found.append(where)
                    pos = scratch.find(needle, pos + 1, got)
    finally:
        os.close(fd)
    return found

pair = signing_keypair()
SIZE = 600
"""

SCAN_CASES = {
    "sign a view of a SecureBuffer": """
message = create_key(SIZE)
with message.reading() as view:
    sign(pair.secret, VIEW)
    print(len(copies(view[100:164], message._data_address() + 100)))
""",
    "sign a bytearray": """
message = bytearray(SIZE)
with open("/dev/urandom", "rb", buffering=0) as random:
    assert random.readinto(message) == SIZE
sign(pair.secret, message)
print(len(copies(memoryview(message)[100:164], address(message) + 100)))
""",
    "aead_decrypt a bytearray": """
key = create_key(32)
box = bytearray(SIZE)
with open("/dev/urandom", "rb", buffering=0) as random:
    assert random.readinto(box) == SIZE
try:
    aead_decrypt(key, box, bytes(24))
except ValueError:
    pass
print(len(copies(memoryview(box)[100:164], address(box) + 100)))
""",
}


@pytest.mark.parametrize("case, view", [
    ("sign a view of a SecureBuffer", "view"),
    ("sign a view of a SecureBuffer", "view[1:]"),
    ("sign a view of a SecureBuffer", "memoryview(view[1:])"),
    ("sign a bytearray", ""),
    ("aead_decrypt a bytearray", ""),
])
def test_no_copy_of_an_input_is_left_in_ordinary_memory(case: str, view: str) -> None:
    result = run_python(SCAN + SCAN_CASES[case].replace("VIEW", view))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [b"0"], result.stdout
