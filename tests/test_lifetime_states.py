"""The slot's states (docs/lifetime.md) as a Hypothesis state machine.

Buffers and keys are made every way the library makes them (SecureBuffer,
create_key, KeyRing.create_key, KeyRing._new_key, read_key of a key file, a
fill by readinto), used through Python views (reading() / writing() entered
and exited as separate steps, memoryviews held) and through C borrows (the
crypto calls, an input snapshot, ==), protected, destroyed every way
(destroy, wipe_all, KeyRing.destroy) and dropped.  After every step each
buffer is checked against the model: `destroyed` and `state`, no user left in
flight, and its bytes read through /proc/self/mem (which reads PROT_NONE
pages): the model's bytes while it lives, zeros once destroyed (single
threaded, no destroy is ever deferred).  A dropped buffer's slot must read
zero (or be unmapped), and a new buffer or ring key must start all zero.

Nothing fatal is a step: a destroyed buffer is never used again, a NOACCESS
one never exported, a key never made writable, a held view never touched
after its protection changed.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from securekeys import KeyRing, Protection, SecureBuffer, SecureKey, create_key, read_key, wipe_all, write_key
from securekeys import crypto
from securekeys._memory import _users_in_flight, live_buffers

NA, RO, RW = Protection.NOACCESS, Protection.READONLY, Protection.READWRITE
RING_KEY_SIZE = 32
MAX_LIVE = 10
SIZES = st.sampled_from([1, 16, 32, 33, 64, 100, 4096, 5000])
KEY_SIZES = st.sampled_from([16, 32, 64, 100, 5000])
PICK = st.integers(min_value=0, max_value=1 << 16)


@dataclass(eq=False)
class Tracked:
    """One buffer and what the model says about it."""
    buf: SecureBuffer
    how: str                        # how it was made
    data: bytes                     # the model's copy of its bytes
    base: Protection                # the owner's choice of protection
    ring: KeyRing | None = None
    destroyed: bool = False
    readers: list[tuple[object, memoryview]] = field(default_factory=list)
    writers: list[tuple[object, memoryview]] = field(default_factory=list)
    views: list[memoryview] = field(default_factory=list)

    @property
    def is_key(self) -> bool:
        return isinstance(self.buf, SecureKey)

    @property
    def state(self) -> Protection:
        """What `buf.state` must say: the base, raised by the borrows."""
        if self.destroyed:
            return Protection.DESTROYED
        if self.writers:
            return RW
        if self.readers and self.base is NA:
            return RO
        return self.base


def view_bytes(buf: SecureBuffer) -> bytes:
    with buf.reading() as view:
        return bytes(view)


class LifetimeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.mem = os.open("/proc/self/mem", os.O_RDONLY)
        self.dir = tempfile.mkdtemp(prefix="securekeys-lifetime-")
        os.chmod(self.dir, 0o700)
        self.files = 0
        self.ring = KeyRing(RING_KEY_SIZE)
        self.tracked: list[Tracked] = []

    # -- helpers -------------------------------------------------------------------------------

    def peek(self, address: int, size: int) -> bytes:
        return os.pread(self.mem, size, address)

    def memory_of(self, entry: Tracked) -> bytes:
        return self.peek(entry.buf._data_address(), entry.buf.size)

    def live(self) -> list[Tracked]:
        return [e for e in self.tracked if not e.destroyed]

    def room(self) -> bool:
        return len(self.live()) < MAX_LIVE

    @staticmethod
    def pick(entries: list[Tracked], i: int) -> Tracked:
        return entries[i % len(entries)]

    def track(self, buf: SecureBuffer, how: str, base: Protection, ring: KeyRing | None = None) -> Tracked:
        assert buf.state is base and not buf.destroyed, (how, buf)
        assert _users_in_flight(buf) == 0
        data = self.memory_of(Tracked(buf, how, b"", base))
        if base is not NA:
            assert view_bytes(buf) == data      # /proc/self/mem sees what a view sees
        entry = Tracked(buf, how, data, base, ring)
        self.tracked.append(entry)
        return entry

    def exportable(self) -> list[Tracked]:
        return [e for e in self.live() if e.state is not NA]

    def writable(self) -> list[Tracked]:
        return [e for e in self.live() if not e.is_key]

    def close_views(self, entry: Tracked) -> None:
        for borrow, _ in reversed(entry.readers + entry.writers):
            borrow.__exit__(None, None, None)   # type: ignore[attr-defined]
        entry.readers.clear()
        entry.writers.clear()
        for view in entry.views:
            view.release()
        entry.views.clear()

    # -- making buffers and keys ---------------------------------------------------------------

    @precondition(lambda self: self.room())
    @rule(size=SIZES, data=st.binary(max_size=64))
    def new_buffer(self, size: int, data: bytes) -> None:
        entry = self.track(SecureBuffer(size), "SecureBuffer", RW)
        assert entry.data == bytes(size)        # a new buffer starts zero-filled
        with entry.buf.writing() as view:       # then holds something worth wiping
            entry.writers.append((None, view))
            self.write_into(entry, data, size - len(data))
            entry.writers.clear()

    @precondition(lambda self: self.room())
    @rule(size=KEY_SIZES)
    def new_key(self, size: int) -> None:
        entry = self.track(create_key(size), "create_key", RO)
        assert entry.data != bytes(size)

    @precondition(lambda self: self.room())
    @rule()
    def ring_create_key(self) -> None:
        self.track(self.ring.create_key(), "KeyRing.create_key", RO, self.ring)

    @precondition(lambda self: self.room())
    @rule(data=st.binary(min_size=RING_KEY_SIZE, max_size=RING_KEY_SIZE))
    def ring_new_key(self, data: bytes) -> None:
        key = self.ring._new_key()
        # A ring slot is reused at once after a drop: it must not hold the old bytes.
        assert self.peek(key._data_address(), key.size) == bytes(key.size)
        assert key.state is RW
        self.fill(key, data)
        self.track(key, "KeyRing._new_key", RO, self.ring)

    @precondition(lambda self: self.room())
    @rule(data=st.binary(min_size=1, max_size=200))
    def fill_key(self, data: bytes) -> None:
        key = SecureKey(len(data))
        assert self.peek(key._data_address(), key.size) == bytes(key.size)
        self.fill(key, data)
        self.track(key, "readinto", RO)

    @staticmethod
    def fill(key: SecureKey, data: bytes) -> None:
        r, w = os.pipe()
        try:
            os.write(w, data)
            os.close(w)
            w = -1
            assert key.readinto(r) == len(data)
            assert _users_in_flight(key) == 0
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        key.readonly()

    @precondition(lambda self: self.room())
    @rule(size=KEY_SIZES)
    def read_key_file(self, size: int) -> None:
        source = create_key(size)
        expected = view_bytes(source)
        self.files += 1
        path = os.path.join(self.dir, f"key{self.files}")
        write_key(path, source)
        source.destroy()
        assert os.stat(path).st_mode & 0o777 == 0o400
        key = read_key(path, size)
        os.unlink(path)
        entry = self.track(key, "read_key", RO)
        assert entry.data == expected

    # -- Python views --------------------------------------------------------------------------

    @precondition(lambda self: self.live())
    @rule(i=PICK, write=st.booleans(), data=st.binary(max_size=64), offset=st.integers(0, 64))
    def enter_borrow(self, i: int, write: bool, data: bytes, offset: int) -> None:
        # writing() (and a write through it) for a SecureBuffer; reading() otherwise.
        entry = self.pick(self.live(), i)
        write = write and not entry.is_key
        borrow = entry.buf.writing() if write else entry.buf.reading()
        view = borrow.__enter__()
        (entry.writers if write else entry.readers).append((borrow, view))
        assert bytes(view) == entry.data and view.readonly != write
        if write:
            self.write_into(entry, data, offset)

    @precondition(lambda self: any(e.readers for e in self.tracked))
    @rule(i=PICK)
    def exit_reading(self, i: int) -> None:
        # Live or destroyed since: ending a borrow touches no byte.
        entry = self.pick([e for e in self.tracked if e.readers], i)
        borrow, _ = entry.readers.pop()
        borrow.__exit__(None, None, None)   # type: ignore[attr-defined]

    @precondition(lambda self: any(e.writers and not e.destroyed for e in self.tracked))
    @rule(i=PICK, data=st.binary(min_size=1, max_size=64), offset=st.integers(0, 64))
    def write_through_view(self, i: int, data: bytes, offset: int) -> None:
        self.write_into(self.pick([e for e in self.tracked if e.writers and not e.destroyed], i), data, offset)

    @staticmethod
    def write_into(entry: Tracked, data: bytes, offset: int) -> None:
        view = entry.writers[-1][1]
        offset %= len(view)
        data = data[:len(view) - offset]
        view[offset:offset + len(data)] = data
        entry.data = entry.data[:offset] + data + entry.data[offset + len(data):]

    @precondition(lambda self: any(e.writers for e in self.tracked))
    @rule(i=PICK)
    def exit_writing(self, i: int) -> None:
        entry = self.pick([e for e in self.tracked if e.writers], i)
        borrow, _ = entry.writers.pop()
        borrow.__exit__(None, None, None)   # type: ignore[attr-defined]

    @precondition(lambda self: self.exportable())
    @rule(i=PICK)
    def hold_memoryview(self, i: int) -> None:
        entry = self.pick(self.exportable(), i)
        view = memoryview(entry.buf)
        assert bytes(view) == entry.data    # safe now; never touched again
        assert view.readonly == (entry.is_key or entry.state is not RW)
        entry.views.append(view)

    @precondition(lambda self: any(e.views for e in self.tracked))
    @rule(i=PICK)
    def release_memoryview(self, i: int) -> None:
        self.pick([e for e in self.tracked if e.views], i).views.pop().release()

    # -- C borrows: the crypto runner, an input snapshot, == -----------------------------------

    @precondition(lambda self: self.live())
    @rule(i=PICK, message=st.binary(max_size=2048))
    def crypto_borrow(self, i: int, message: bytes) -> None:
        entry = self.pick(self.live(), i)
        buf, data = entry.buf, entry.data
        if 16 <= len(data) <= 64:
            expected = hashlib.blake2b(message, key=data, digest_size=32).digest()
            assert crypto.keyed_hash(buf, message) == expected
        if len(data) == 32:
            assert crypto.mac(buf, message) == hmac.new(data, message, hashlib.sha512).digest()[:32]
            assert crypto.mac_verify(buf, message, crypto.mac(buf, message))
        # The buffer as a message read twice: signed from a snapshot in guarded memory.
        pair = crypto.signing_keypair()
        try:
            assert crypto.verify(pair.public, data, crypto.sign(pair.secret, buf))
        finally:
            pair.secret.destroy()

    @precondition(lambda self: self.live())
    @rule(i=PICK, j=PICK)
    def compare(self, i: int, j: int) -> None:
        a, b = self.pick(self.live(), i), self.pick(self.live(), j)
        assert (a.buf == b.buf) == (a.data == b.data)
        assert (a.buf != b.buf) == (a.data != b.data)

    # -- protection ----------------------------------------------------------------------------

    @precondition(lambda self: self.live())
    @rule(i=PICK, level=st.sampled_from([NA, RO, RW]))
    def protect(self, i: int, level: Protection) -> None:
        entry = self.pick(self.live(), i)
        if entry.is_key and level is RW:
            level = RO                          # readwrite() on a key is fatal
        {NA: entry.buf.noaccess, RO: entry.buf.readonly, RW: entry.buf.readwrite}[level]()
        entry.base = level

    # -- destroying ----------------------------------------------------------------------------

    @precondition(lambda self: self.tracked)
    @rule(i=PICK)
    def destroy(self, i: int) -> None:
        entry = self.pick(self.tracked, i)     # destroyed ones too: it is idempotent
        entry.buf.destroy()
        entry.destroyed = True

    @precondition(lambda self: len(self.live()) >= 3)
    @rule()
    def wipe_everything(self) -> None:
        live = len(self.live())
        assert wipe_all() >= live
        for entry in self.tracked:
            entry.destroyed = True
        assert len(self.ring) == 0

    @precondition(lambda self: any(e.ring is self.ring for e in self.live()))
    @rule()
    def destroy_ring(self) -> None:
        ring = self.ring
        ring.destroy()
        for entry in self.tracked:
            if entry.ring is ring:
                entry.destroyed = True
        assert len(ring) == 0
        try:
            ring.create_key()
        except ValueError:
            pass
        else:
            raise AssertionError("a destroyed KeyRing made a key")
        self.ring = KeyRing(RING_KEY_SIZE)

    @precondition(lambda self: self.tracked)
    @rule(i=PICK)
    def drop(self, i: int) -> None:
        entry = self.pick(self.tracked, i)
        self.close_views(entry)
        self.tracked.remove(entry)
        address, size = entry.buf._data_address(), entry.buf.size
        in_this_ring = entry.ring is self.ring
        before = live_buffers()
        del entry
        if live_buffers() != before - 1:
            gc.collect()
        assert live_buffers() == before - 1     # deallocated: its slot is free
        try:
            left = self.peek(address, size)
        except OSError:
            return                              # its chunk was unmapped
        assert left == bytes(size)
        if in_this_ring:
            # The ring hands the slot out next, zeroed.
            key = self.ring._new_key()
            try:
                assert key._data_address() == address
                assert self.peek(address, size) == bytes(size)
            finally:
                key.destroy()

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def buffers_agree_with_the_model(self) -> None:
        for entry in self.tracked:
            buf = entry.buf
            assert buf.destroyed == entry.destroyed, (entry.how, buf)
            assert buf.state is entry.state, (entry.how, buf.state, entry.state)
            assert _users_in_flight(buf) == 0, (entry.how, buf)
            if entry.destroyed:
                assert self.memory_of(entry) == bytes(buf.size), (entry.how, "destroyed but not zero")
            else:
                assert self.memory_of(entry) == entry.data, (entry.how, "live bytes changed")

    @invariant()
    def the_ring_counts_its_live_keys(self) -> None:
        assert len(self.ring) == sum(1 for e in self.live() if e.ring is self.ring)

    def teardown(self) -> None:
        for entry in self.tracked:
            self.close_views(entry)
            entry.buf.destroy()
        self.tracked.clear()
        os.close(self.mem)
        shutil.rmtree(self.dir, ignore_errors=True)


LifetimeMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifetime = LifetimeMachine.TestCase
