"""Inputs that change during a call never change its answer (issue 11, item 3).

libsodium reads some inputs twice: crypto_aead_*_decrypt checks the tag over
the ciphertext, then decrypts it in a second pass; crypto_sign_verify_detached
hashes R, then compares R again; crypto_sign_detached hashes the message for
the nonce, then again for the challenge.  With the GIL released (or with the
buffer shared with another process, whatever the GIL), a buffer that changes
between the two reads gave a plaintext the sender never wrote, a forged
signature accepted, or one nonce for two messages: the secret key.  These
tests attack with real threads and a real second process, and check that
every answer belongs to bytes the buffer really held.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import hashlib
import os
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from conftest import run_python
from securekeys import SecureBuffer, _memory, create_key
from securekeys.crypto import DecryptionError, aead_decrypt, aead_encrypt, sign, signing_keypair, verify

BIG = 16 << 20      # long enough that the two passes are milliseconds apart


def raw(buf: SecureBuffer) -> bytes:
    with buf.reading() as view:
        return bytes(view)


def duration(call: Callable[[], object]) -> float:
    """Median seconds of a few undisturbed calls (the box may be loaded)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Flipper:
    """A thread that toggles one byte of `buf` every `period` seconds."""

    def __init__(self, buf: bytearray, index: int, period: float) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(buf, index, period))

    def _run(self, buf: bytearray, index: int, period: float) -> None:
        while not self.stop.is_set():
            buf[index] ^= 0x01
            time.sleep(period)

    def __enter__(self) -> Flipper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_decrypt_returns_only_the_authentic_plaintext_while_a_thread_flips_the_ciphertext() -> None:
    key, nonce = create_key(32), os.urandom(24)
    message = os.urandom(BIG)
    box = bytearray(aead_encrypt(key, message, nonce))
    # The tag pass reads byte 0 at once, the decryption pass half a call
    # later: a flip every half call makes the two passes disagree.
    half = duration(lambda: aead_decrypt(key, bytes(box), nonce).destroy()) / 2
    authentic = rejected = 0
    with Flipper(box, 0, half):
        for _ in range(40):
            try:
                plain = aead_decrypt(key, box, nonce)
            except DecryptionError:
                rejected += 1
                continue
            same = raw(plain) == message
            plain.destroy()
            assert same, "aead_decrypt returned a plaintext the sender never wrote"
            authentic += 1
    assert rejected > 0      # the flips did land during decryptions


CHILD_FLIPS_SHARED_MEMORY = """
import mmap, os, signal
from securekeys import create_key
from securekeys.crypto import DecryptionError, aead_decrypt, aead_encrypt

key, nonce = create_key(32), os.urandom(24)
message = os.urandom({size})
box = aead_encrypt(key, message, nonce)
shared = mmap.mmap(-1, len(box))      # MAP_SHARED: the flipper writes these very pages
shared[:] = box
pid = os.fork()
if pid == 0:
    try:
        while True:
            shared[7] ^= 1
    finally:
        os._exit(0)
forged = authentic = rejected = 0
try:
    for _ in range({rounds}):
        try:
            plain = aead_decrypt(key, shared, nonce)
        except DecryptionError:
            rejected += 1
            continue
        with plain.reading() as view:
            if view == message:
                authentic += 1
            else:
                forged += 1
        plain.destroy()
finally:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print("forged", forged, "authentic", authentic, "rejected", rejected)
"""


@pytest.mark.parametrize("size, rounds", [(512, 20000), (65536, 2000)], ids=["gil-held", "gil-released"])
def test_decrypt_of_memory_another_process_writes(size: int, rounds: int) -> None:
    # The GIL cannot protect this: the writer is another process.
    result = run_python(CHILD_FLIPS_SHARED_MEMORY.format(size=size, rounds=rounds))
    assert result.returncode == 0, result
    words = result.stdout.split()
    forged, rejected = int(words[1]), int(words[5])
    assert forged == 0, result.stdout
    assert rejected > 0, result.stdout      # the writer did race the decryptions


# Ed25519 arithmetic for the attacker, from libsodium itself (test only).
_sodium = ctypes.CDLL(ctypes.util.find_library("sodium"))
ELL = 2 ** 252 + 27742317777372353535851937790883648493


def _scalar(x: int) -> bytes:
    return (x % ELL).to_bytes(32, "little")


def _point(call: Callable[..., int], *args: bytes) -> bytes:
    out = ctypes.create_string_buffer(32)
    assert call(out, *args) == 0
    return out.raw


def _hash_scalar(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % ELL


def _delays(call_time: float) -> Iterator[float]:
    """When to strike: spread over the first half of a call."""
    for i in range(8):
        yield call_time * (0.05 + 0.4 * i / 8)


def _strike_during(call: Callable[[], object], delay: float, strike: Callable[[], None]) -> object:
    """Run `call`, and `strike()` from another thread `delay` seconds in."""
    go = threading.Event()

    def attacker() -> None:
        go.wait()
        time.sleep(delay)
        strike()

    thread = threading.Thread(target=attacker)
    thread.start()
    go.set()
    try:
        return call()
    finally:
        thread.join()


def _forgery(public: bytes, message: bytes) -> tuple[bytes, bytes, bytes]:
    """(R1, R2, S): any R1 and S, h = H(R1 || A || M), R2 = [S]B - [h]A.  A
    verifier that hashes R1 but compares with R2 accepts (R, S) for a message
    the key holder never signed."""
    r1 = _point(_sodium.crypto_scalarmult_ed25519_base_noclamp, _scalar(int.from_bytes(os.urandom(32), "little")))
    s = _scalar(int.from_bytes(os.urandom(32), "little"))
    h = _hash_scalar(r1, public, message)
    r2 = _point(_sodium.crypto_core_ed25519_sub,
                _point(_sodium.crypto_scalarmult_ed25519_base_noclamp, s),
                _point(_sodium.crypto_scalarmult_ed25519_noclamp, _scalar(h), public))
    return r1, r2, s


def test_verify_never_accepts_a_signature_swapped_mid_call() -> None:
    assert _sodium.sodium_init() >= 0
    public = signing_keypair().public
    message = os.urandom(BIG)
    r1, r2, s = _forgery(public, message)
    call_time = duration(lambda: verify(public, message, r1 + s))
    for delay in _delays(call_time):
        r1, r2, s = _forgery(public, message)
        assert not verify(public, message, r1 + s)
        assert not verify(public, message, r2 + s)
        signature = bytearray(r1 + s)

        def swap() -> None:
            signature[:32] = r2

        accepted = _strike_during(lambda: verify(public, message, signature), delay, swap)
        assert signature[:32] == r2            # the swap did happen
        assert accepted is False, "verify accepted a forged signature"


def test_sign_signs_one_message_the_buffer_held() -> None:
    # Ed25519 is deterministic: the only right answers are the signatures of
    # the two messages the buffer ever held.  A signer that takes its nonce
    # from one and its challenge from the other reuses that nonce on two
    # messages, and two such signatures give away the secret scalar.
    pair = signing_keypair()
    buffer = bytearray(os.urandom(BIG))
    before = bytes(buffer)
    buffer[0] ^= 0x01
    after = bytes(buffer)
    right = {sign(pair.secret, before), sign(pair.secret, after)}
    call_time = duration(lambda: sign(pair.secret, before))
    for delay in _delays(call_time):
        buffer[0] = before[0]

        def flip() -> None:
            buffer[0] = after[0]

        signature = _strike_during(lambda: sign(pair.secret, buffer), delay, flip)
        assert signature in right, "sign mixed two messages (one nonce, two challenges)"


def _peak_heap_during(call: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_bytes_are_read_in_place_and_mutable_inputs_are_copied() -> None:
    key, nonce = create_key(32), os.urandom(24)
    box = aead_encrypt(key, os.urandom(BIG), nonce)
    assert _peak_heap_during(lambda: aead_decrypt(key, box, nonce).destroy()) < BIG // 16
    mutable = bytearray(box)
    assert _peak_heap_during(lambda: aead_decrypt(key, mutable, nonce).destroy()) >= BIG


@pytest.mark.parametrize("noaccess", [False, True])
def test_secure_buffer_inputs_read_twice(noaccess: bool) -> None:
    # A SecureBuffer may hold a secret: its snapshot is guarded memory,
    # destroyed after the call, and the original keeps its protection.
    key, nonce = create_key(32), os.urandom(24)
    box = aead_encrypt(key, b"attack at dawn", nonce)
    ciphertext = SecureBuffer(len(box))
    with ciphertext.writing() as view:
        view[:] = box
    message = create_key(48)           # a sealed SecureKey is read in place
    if noaccess:
        ciphertext.noaccess()
        message.noaccess()
    pair = signing_keypair()
    gc.collect()
    live = _memory.live_buffers()
    plain = aead_decrypt(key, ciphertext, nonce)
    assert raw(plain) == b"attack at dawn"
    plain.destroy()
    assert verify(pair.public, message, sign(pair.secret, message))
    assert verify(pair.public, box, sign(pair.secret, ciphertext))
    del plain
    gc.collect()
    assert _memory.live_buffers() == live      # no snapshot left behind
    assert ciphertext.state.name == ("NOACCESS" if noaccess else "READWRITE")
    assert message.state.name == ("NOACCESS" if noaccess else "READONLY")


def test_sign_never_reuses_a_nonce_when_another_thread_destroys_the_message() -> None:
    # The message is a KeyRing key whose page a READONLY neighbour keeps
    # readable: destroyed mid-call, it reads as zeros without a fault.  Read
    # in place, the nonce came from one message and the challenge from the
    # other, and two such signatures give away the secret key.
    result = run_python("""
import os, sys, threading
sys.setswitchinterval(1e-6)
from securekeys import KeyRing
from securekeys.crypto import signing_keypair, sign
size = 2000
pair = signing_keypair()
message = os.urandom(size)
honest = sign(pair.secret, message)
reused = 0
for _ in range(600):
    ring = KeyRing(size)           # two keys a page: the neighbour shares m's page
    neighbour = ring.create_key()
    m = ring._new_key()            # a ring key holding the message, READONLY
    r, w = os.pipe()
    os.write(w, message)
    os.close(w)
    m.readinto(r)
    os.close(r)
    m.readonly()
    started = [False]
    def destroy_it(key=m):
        while not started[0]:
            pass
        key.destroy()
    thread = threading.Thread(target=destroy_it)
    thread.start()
    started[0] = True
    signature = sign(pair.secret, m)
    thread.join()
    if signature[:32] == honest[:32] and signature != honest:
        reused += 1
    neighbour.destroy()
print(reused)
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == b"0"
