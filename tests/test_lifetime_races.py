"""Races held open on purpose (docs/lifetime.md): destroy(), wipe_all() and
KeyRing.destroy() strike while a call is using a key, judged by the outcome
and by a scan of the process's whole memory for the secret.

Each case runs in a fresh interpreter.  A call runs on its own thread; the
main thread waits until the call counts as a user of the key
(`_users_in_flight`), strikes, then checks that the call was still in flight
afterwards (the count cannot rise again: a new user is fatal), so the race
really happened.  A child that could not race says so (exit status
NOT_RACED) and is run again; the verdict itself never depends on timing:
where two outcomes are correct both are accepted, and a normal return with a
result where none is allowed always fails.

The secrets never exist as Python objects: they are made in guarded memory,
and the child remembers each one only masked (XOR a random mask).  For the
scan it rebuilds the secret byte by byte in a new SecureBuffer (the needle),
searches every mapping of /proc/self/maps through /proc/self/mem (which
reads PROT_NONE pages) for it through a view of the needle, skipping the
needle's own bytes.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from conftest import run_python

NOT_RACED = 3

PRELUDE = r'''
import ctypes, gc, mmap, os, sys, threading, time
from securekeys import KeyDestroyedError, KeyRing, SecureBuffer, SecureKey, create_key, wipe_all
from securekeys import crypto
from securekeys._memory import _users_in_flight

MEM = os.open("/proc/self/mem", os.O_RDONLY)
TIMEOUT = 60.0

def say(*words):
    print(*words, flush=True)

def zeros(buf):
    """Every byte of `buf` is zero (read through /proc/self/mem)."""
    address, left = buf._data_address(), buf.size
    while left:
        n = min(left, 1 << 22)
        if os.pread(MEM, n, address).count(0) != n:
            return False
        address, left = address + n, left - n
    return True

class Masked:
    """A secret remembered as secret XOR mask: neither is the secret."""
    def __init__(self, view):
        self.mask = os.urandom(len(view))
        self.masked = bytearray(a ^ b for a, b in zip(view, self.mask))

    def needle(self):
        buf = SecureBuffer(len(self.mask))
        with buf.writing() as w:
            for i in range(len(self.mask)):
                w[i] = self.masked[i] ^ self.mask[i]
        buf.readonly()
        return buf

def remember(buf):
    with buf.reading() as view:
        return Masked(view)

def holds(buf, masked):
    """`buf` holds exactly the remembered secret: its bytes are read through
    /proc/self/mem into guarded memory and compared there."""
    probe, needle = SecureBuffer(buf.size), masked.needle()
    try:
        with probe.writing() as w:
            assert os.preadv(MEM, [w], buf._data_address()) == buf.size
        return probe == needle
    finally:
        probe.destroy()
        needle.destroy()

def copy(dst, src):
    with dst.writing() as w, src.reading() as r:
        w[:] = r

def fill_key(key, src):
    """Fill a new SecureKey from `src` through a pipe (keys take no writing())."""
    r, w = os.pipe()
    with src.reading() as view:
        os.write(w, view)
    os.close(w)
    assert key.readinto(r) == key.size
    os.close(r)
    key.readonly()

class Call(threading.Thread):
    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.outcome = fn, None, None

    def run(self):
        try:
            self.result = self.fn()
            self.outcome = "returned"
        except KeyDestroyedError:
            self.outcome = "KeyDestroyedError"
        except BaseException as exc:
            self.outcome = "raised-" + type(exc).__name__ + ":" + str(exc).replace(" ", "_")

def wait_in_flight(buf, call):
    deadline = time.monotonic() + TIMEOUT
    while _users_in_flight(buf) == 0:
        if not call.is_alive():
            say("NOT-RACED the call ended before it was seen in flight:", call.outcome)
            os._exit(3)
        if time.monotonic() > deadline:
            say("TIMEOUT the call never came in flight")
            os._exit(4)
        time.sleep(0.0002)

def strike(buf, call, action, start=True, delay=0.0):
    """Start `call` (unless it runs already), wait until it uses `buf` (and
    `delay` seconds more), run `action`; exit NOT_RACED unless the call was
    still using `buf` afterwards."""
    if start:
        call.start()
    wait_in_flight(buf, call)
    time.sleep(delay)
    action()
    if _users_in_flight(buf) == 0:
        call.join()
        say("NOT-RACED the call ended before the strike:", call.outcome)
        os._exit(3)
    say("RACED")

def mappings():
    with open("/proc/self/maps", "rb") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split(b"-"))
        yield lo, hi, fields[5] if len(fields) > 5 else b""

def scan(**secrets):
    """Say FOUND <name> <count> for each remembered secret: its occurrences
    in every readable mapping of this process, its needle's bytes left out.
    Read into one anonymous mapping (never the heap, where the evidence is)."""
    needles = {name: masked.needle() for name, masked in secrets.items()}
    views = {name: memoryview(buf) for name, buf in needles.items()}
    longest = max(b.size for b in needles.values())
    chunk = 1 << 23
    window = mmap.mmap(-1, chunk + longest)
    here = ctypes.addressof(ctypes.c_char.from_buffer(window))
    skip = sorted([(b._data_address(), b._data_address() + b.size) for b in needles.values()]
                  + [(here, here + len(window))])
    found = dict.fromkeys(needles, 0)
    into = memoryview(window)
    for lo, hi, name in list(mappings()):
        if name in (b"[vvar]", b"[vvar_vclock]", b"[vsyscall]"):
            continue
        pieces = [(lo, hi)]
        for a, b in skip:
            pieces = [q for p, e in pieces
                      for q in ((p, min(e, a)), (max(p, b), e)) if q[0] < q[1]]
        for start, end in pieces:
            pos = start
            while pos < end:
                n = min(chunk, end - pos)
                try:
                    got = os.preadv(MEM, [into[:min(n + longest - 1, end - pos)]], pos)
                except OSError:
                    break
                for nm, view in views.items():
                    i = window.find(view, 0, got)
                    while 0 <= i < n:
                        found[nm] += 1
                        i = window.find(view, i + 1, got)
                pos += n
    into.release()
    window.close()
    for view in views.values():
        view.release()
    for buf in needles.values():
        buf.destroy()
    for nm, count in found.items():
        say("FOUND", nm, count)
'''


class Child:
    """A finished child: its exit status and the words it said."""

    def __init__(self, result: subprocess.CompletedProcess[bytes]) -> None:
        self.returncode = result.returncode
        self.stdout = result.stdout.decode(errors="replace")
        self.stderr = result.stderr.decode(errors="replace")
        self.said: dict[str, list[str]] = {}
        for line in self.stdout.splitlines():
            word, _, rest = line.partition(" ")
            self.said.setdefault(word, []).append(rest)

    def __repr__(self) -> str:
        return f"<child rc={self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-3000:]}>"

    def one(self, word: str) -> str:
        assert len(self.said.get(word, [])) == 1, (word, self)
        return self.said[word][0]

    def found(self) -> dict[str, int]:
        return {name: int(count) for name, count in (s.split() for s in self.said.get("FOUND", []))}

    @property
    def died_fatally(self) -> bool:
        return self.returncode == -signal.SIGSEGV and "securekeys: fatal: " in self.stderr


def race(body: str, *, env: dict[str, str] | None = None, attempts: int = 3, late: bool = False) -> Child:
    """Run PRELUDE + body in a fresh interpreter until it raced.  `late`: the
    strike comes once the call should be done with the key (LATE scales a
    delay, a share of the call's measured length), to reach the
    KeyDestroyedError branch and its checks; a fatal death is correct too,
    but then the branch is tried again, and skipped after `attempts`."""
    child = None
    for _ in range(attempts):
        child = Child(run_python(PRELUDE + body.replace("LATE", "1" if late else "0"),
                                 timeout=120, env=env))
        assert "TIMEOUT" not in child.said, child
        if child.returncode != NOT_RACED and not (late and child.died_fatally):
            return child
    if late and child is not None and child.died_fatally:
        pytest.skip(f"the strike never came after the call's last touch of the key: {child!r}")
    pytest.fail(f"the call could not be caught in flight in {attempts} attempts: {child!r}")


def assert_failed_or_died(child: Child) -> bool:
    """The call raised KeyDestroyedError (True) or the process died through
    the fatal path (False); anything else, a returned result above all, fails."""
    if child.died_fatally:
        assert "OUTCOME" not in child.said, child
        return False
    assert child.returncode == 0, child
    assert child.one("OUTCOME") == "KeyDestroyedError", child
    assert "RACED" in child.said, child
    return True


def assert_nowhere(child: Child, *names: str) -> None:
    found = child.found()
    assert sorted(found) == sorted(names), child
    assert all(count == 0 for count in found.values()), (found, child)


def test_the_scan_finds_what_it_looks_for() -> None:
    # The scan's control: a live key is found once (in its guarded memory),
    # and once more for a Python copy of it.
    child = Child(run_python(PRELUDE + '''
key, other = create_key(32), create_key(64)
secret, copied = remember(key), remember(other)
with other.reading() as view:
    leak = bytes(view)
scan(secret=secret, copied=copied)
'''))
    assert child.returncode == 0, child
    assert child.found() == {"secret": 1, "copied": 2}, child


BIG = 100 << 20         # signing: Ed25519 hashes it twice, about a second here

# -- a / b: sign() while its key is destroyed ---------------------------------------------------

def test_destroy_of_a_sealed_signing_key_in_flight_defers_the_wipe() -> None:
    child = race(f'''
m = bytes({BIG})
seed = create_key(32)
pair = crypto.signing_keypair(seed)
sk, public = pair.secret, pair.public
expected = crypto.sign(sk, m)
secret = remember(sk)
seed.destroy()
call = Call(lambda: crypto.sign(sk, m))
strike(sk, call, sk.destroy)
say("AT-ONCE", sk.destroyed, sk.state.name, holds(sk, secret))
call.join()
say("OUTCOME", call.outcome)
say("CORRECT", call.result == expected, crypto.verify(public, m, call.result))
say("AFTER", zeros(sk), _users_in_flight(sk))
del pair
scan(secret=secret)
''')
    assert child.returncode == 0, child
    # destroyed at once, but the bytes stay for the call in flight
    assert child.one("AT-ONCE") == "True DESTROYED True", child
    assert child.one("OUTCOME") == "returned", child
    assert child.one("CORRECT") == "True True", child
    assert child.one("AFTER") == "True 0", child       # the last user wiped it
    assert_nowhere(child, "secret")


@pytest.mark.parametrize("late", [False, True], ids=["at-once", "late"])
def test_keyring_destroy_while_signing_never_returns_a_signature(late: bool) -> None:
    # Ed25519 reads the key at its start and the public half again after its
    # first pass over the message: struck at once the call faults on the
    # revoked page; struck late it made a signature, which must be dropped.
    child = race(f'''
m = bytes({BIG})
source = crypto.signing_keypair()
ring = KeyRing(64)
sk = ring._new_key()
fill_key(sk, source.secret)
secret = remember(sk)
source.secret.destroy()
began = time.monotonic()
crypto.sign(sk, m)
took = time.monotonic() - began
call = Call(lambda: crypto.sign(sk, m))
strike(sk, call, ring.destroy, delay=LATE * 0.75 * took)
say("AT-ONCE", sk.destroyed, len(ring))
call.join()
say("OUTCOME", call.outcome)
say("AFTER", zeros(sk), _users_in_flight(sk))
del source
scan(secret=secret)
''', late=late)
    if assert_failed_or_died(child):
        assert child.one("AT-ONCE") == "True 0", child
        assert child.one("AFTER") == "True 0", child
        assert_nowhere(child, "secret")


# -- c: wipe_all() while AEAD runs ---------------------------------------------------------------

# Results below glibc's largest mmap threshold live on the heap and stay there
# when freed: a ciphertext dropped without being zeroed is then found by the scan.
HEAP_RESULTS = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
AEAD_PLAIN = 24 << 20
KEYSTREAM = '''
key = create_key(32)
nonce = os.urandom(24)
plain = bytes(PLAIN)
# 64 bytes of keystream (the ciphertext of zeros) far into the message, where
# the scan's own small allocations do not reach once the result is freed:
# remembered masked, the ciphertext they came from zeroed in place.
began = time.monotonic()
small = crypto.aead_encrypt(key, memoryview(plain)[:OFFSET + 64], nonce)
took = time.monotonic() - began
view = memoryview(small)
keystream = Masked(view[OFFSET:OFFSET + 64])
view.release()
ctypes.memset(id(small) + bytes.__basicsize__ - 1, 0, len(small))
del small, view
secret = remember(key)
'''.replace("PLAIN", str(AEAD_PLAIN)).replace("OFFSET", str(AEAD_PLAIN - (4 << 20)))


def test_the_keystream_scan_finds_an_unzeroed_dropped_ciphertext() -> None:
    # The control for the next test: without wipe_all(), the dropped result
    # (never zeroed: it was returned) is found on the heap.
    child = race(KEYSTREAM + '''
box = crypto.aead_encrypt(key, plain, nonce)
del box
key.destroy()
scan(secret=secret, keystream=keystream)
''', env=HEAP_RESULTS)
    assert child.returncode == 0, child
    assert child.found()["keystream"] >= 1, child
    assert child.found()["secret"] == 0, child


@pytest.mark.parametrize("late", [False, True], ids=["at-once", "late"])
def test_wipe_all_while_aead_encrypt_runs(late: bool) -> None:
    # XChaCha20 reads the key once, at its start (HChaCha20): struck late, the
    # call completes from its subkey, and its ciphertext must be zeroed.
    child = race(KEYSTREAM + '''
call = Call(lambda: crypto.aead_encrypt(key, plain, nonce))
strike(key, call, wipe_all, delay=LATE * 0.3 * took)
call.join()
say("OUTCOME", call.outcome)
say("AFTER", zeros(key), _users_in_flight(key))
scan(secret=secret, keystream=keystream)
''', env=HEAP_RESULTS, late=late)
    if assert_failed_or_died(child):
        assert child.one("AFTER") == "True 0", child
        # the key, and the ciphertext made from it (zeroed before it was dropped)
        assert_nowhere(child, "secret", "keystream")


def test_wipe_all_while_aead_decrypt_into_a_sink_runs() -> None:
    child = race('''
key = create_key(32)
nonce = os.urandom(24)
box = crypto.aead_encrypt(key, b"\\xa5" * (48 << 20), nonce)
sink = SecureBuffer(48 << 20)
secret = remember(key)
call = Call(lambda: crypto.aead_decrypt_into(key, box, nonce, sink))
strike(key, call, wipe_all)
call.join()
say("OUTCOME", call.outcome)
say("AFTER", zeros(sink), zeros(key), sink.destroyed, _users_in_flight(sink))
scan(secret=secret)
''')
    if assert_failed_or_died(child):
        assert child.one("AFTER") == "True True True 0", child   # the sink is all zero
        assert_nowhere(child, "secret")


# -- d: a fill from a pipe that delivers after the wipe ------------------------------------------

@pytest.mark.parametrize("how", ["buf.destroy", "wipe_all"])
def test_readinto_from_a_blocking_pipe_struck_before_the_data_comes(how: str) -> None:
    child = race(f'''
buf = SecureKey(32)
r, w = os.pipe()
call = Call(lambda: buf.readinto(r))
strike(buf, call, {how})
say("AT-ONCE", buf.destroyed, zeros(buf))
source = create_key(32)            # after the strike: wipe_all() spares it
secret = remember(source)
with source.reading() as view:
    os.write(w, view)              # lands nowhere: the kernel says EFAULT
os.close(w)
call.join()
say("OUTCOME", call.outcome)
source.destroy()
os.close(r)                        # the pipe's bytes go with it
say("AFTER", zeros(buf), zeros(source), _users_in_flight(buf))
scan(secret=secret)
''')
    assert child.returncode == 0, child
    assert child.one("AT-ONCE") == "True True", child
    assert child.one("OUTCOME") == "KeyDestroyedError", child      # deterministic: EFAULT
    assert child.one("AFTER") == "True True 0", child
    assert_nowhere(child, "secret")


@pytest.mark.parametrize("protect", ["readonly", "noaccess"])
def test_half_a_key_read_from_a_blocking_pipe_is_wiped_at_destroy_even_after_sealing(protect: str) -> None:
    # readinto() is a writing user: destroy() must wipe what it has read so
    # far at once, not when the read ends (it may never), even though
    # readonly()/noaccess() made the buffer look sealed.
    child = race(f'''
buf = SecureBuffer(64)
r, w = os.pipe()
source = create_key(32)
secret = remember(source)
with source.reading() as view:
    os.write(w, view)              # the first half arrives; the read waits for the rest
source.destroy()
import array, fcntl, termios
def unread():
    count = array.array("i", [0])
    fcntl.ioctl(r, termios.FIONREAD, count)
    return count[0]
call = Call(lambda: buf.readinto(r))
call.start()
while _users_in_flight(buf) == 0 or unread() != 0:
    time.sleep(0.001)              # in flight, and the first half consumed
buf.{protect}()
buf.destroy()
say("AT-ONCE", buf.destroyed, zeros(buf), _users_in_flight(buf))
scan(secret=secret)
os.close(w)
call.join()
say("OUTCOME", call.outcome)
os.close(r)
''')
    assert child.returncode == 0, child
    assert child.one("AT-ONCE") == "True True 1", child
    assert_nowhere(child, "secret")
    assert child.one("OUTCOME") == "KeyDestroyedError", child


def test_read_key_refuses_a_fifo_without_blocking() -> None:
    # The FIFO variant of (d) cannot arise: every trust policy refuses
    # anything but a regular file (trust.check_key_file; the C path needs
    # S_ISREG), and both paths open with O_NONBLOCK, so no read ever waits.
    child = Child(run_python('''
import os, tempfile
from securekeys import KeyFileError, read_key
d = tempfile.mkdtemp()
os.chmod(d, 0o700)
path = os.path.join(d, "fifo")
os.mkfifo(path, 0o400)
for trust in ("strict", "root-managed", "systemd"):
    try:
        read_key(path, 32, trust=trust)
        print("READ", trust)
    except KeyFileError as e:
        print("REFUSED", trust, "FIFO" in str(e))
''', timeout=30))
    assert child.returncode == 0, child
    assert child.said["REFUSED"] == ["strict True", "root-managed True", "systemd True"], child


# -- e: create_key() racing wipe_all() -----------------------------------------------------------

def test_wipe_all_while_create_key_fills_raises_and_leaves_zeros() -> None:
    # The old bug: "seal() on a destroyed SecureKey" aborted the process.
    child = race('''
SIZE = 16 << 20
call = Call(lambda: create_key(SIZE))
call.start()
deadline = time.monotonic() + TIMEOUT
key = None
while key is None:
    key = next((o for o in gc.get_objects() if type(o) is SecureKey and o.size == SIZE), None)
    if key is None and not call.is_alive():
        say("NOT-RACED"); os._exit(3)
    assert time.monotonic() < deadline
strike(key, call, wipe_all, start=False)
call.join()
say("OUTCOME", call.outcome)
say("AFTER", key.destroyed, zeros(key), _users_in_flight(key))
''')
    assert child.returncode == 0, child
    assert child.one("OUTCOME") == "KeyDestroyedError", child
    assert child.one("AFTER") == "True True 0", child


# -- f: password_key() while its password is destroyed -------------------------------------------

ARGON2 = "opslimit=crypto.OPSLIMIT_MIN, memlimit=128 << 20"


@pytest.mark.parametrize("late", [False, True], ids=["at-once", "late"])
def test_destroy_of_a_writable_password_in_flight_fails_the_derivation(late: bool) -> None:
    # Argon2 reads the password once, at its start: struck late, it derives
    # the right key, which must be wiped and destroyed.
    child = race(f'''
source = create_key(32)
pw = SecureBuffer(32)
copy(pw, source)
source.destroy()
salt = os.urandom(16)
began = time.monotonic()
reference = crypto.password_key(pw, salt, {ARGON2})
took = time.monotonic() - began
password, derived = remember(pw), remember(reference)
reference.destroy()
call = Call(lambda: crypto.password_key(pw, salt, {ARGON2}))
strike(pw, call, pw.destroy, delay=LATE * 0.3 * took)
say("AT-ONCE", pw.destroyed, zeros(pw))     # READWRITE: wiped now
call.join()
say("OUTCOME", call.outcome)
say("AFTER", zeros(pw), _users_in_flight(pw))
scan(password=password, derived=derived)
''', late=late)
    if assert_failed_or_died(child):
        assert child.one("AT-ONCE") == "True True", child
        assert child.one("AFTER") == "True 0", child
        assert_nowhere(child, "password", "derived")


def test_destroy_of_a_sealed_password_in_flight_derives_the_right_key() -> None:
    child = race(f'''
source = create_key(32)
pw = SecureBuffer(32)
copy(pw, source)
source.destroy()
pw.readonly()
salt = os.urandom(16)
reference = crypto.password_key(pw, salt, {ARGON2})
password = remember(pw)
call = Call(lambda: crypto.password_key(pw, salt, {ARGON2}))
strike(pw, call, pw.destroy)
say("AT-ONCE", pw.destroyed, pw.state.name, holds(pw, password))
call.join()
say("OUTCOME", call.outcome)
say("CORRECT", call.result == reference, call.result.state.name)
say("AFTER", zeros(pw), _users_in_flight(pw))
call.result.destroy()
reference.destroy()
scan(password=password)
''')
    assert child.returncode == 0, child
    assert child.one("AT-ONCE") == "True DESTROYED True", child
    assert child.one("OUTCOME") == "returned", child
    assert child.one("CORRECT") == "True READONLY", child
    assert child.one("AFTER") == "True 0", child
    assert_nowhere(child, "password")


# -- g: a ring key destroyed while its page-mate is in use ---------------------------------------

def test_ring_key_destroyed_beside_a_borrowed_page_mate() -> None:
    child = race(f'''
m = bytes({BIG})
source = crypto.signing_keypair()
ring = KeyRing(64)
signer = ring._new_key()
fill_key(signer, source.secret)
source.secret.destroy()
expected = crypto.sign(signer, m)
victim = ring.create_key()
say("SAME-PAGE", signer._data_address() // 4096 == victim._data_address() // 4096)
secret, signing = remember(victim), remember(signer)
address = victim._data_address()
call = Call(lambda: crypto.sign(signer, m))
strike(signer, call, victim.destroy)
say("AT-ONCE", victim.destroyed, zeros(victim), len(ring))
call.join()
say("OUTCOME", call.outcome)
say("CORRECT", call.result == expected, crypto.verify(source.public, m, call.result))
say("AFTER", zeros(victim), _users_in_flight(signer), len(ring))
del victim
gc.collect()
fresh = ring._new_key()            # takes the victim's slot back
say("FRESH", fresh._data_address() == address, zeros(fresh), len(ring))
fresh.destroy()
signer.destroy()
scan(secret=secret, signing=signing)
''')
    assert child.returncode == 0, child
    assert child.one("SAME-PAGE") == "True", child
    assert child.one("AT-ONCE") == "True True 1", child
    assert child.one("OUTCOME") == "returned", child
    assert child.one("CORRECT") == "True True", child
    assert child.one("AFTER") == "True 0 1", child
    assert child.one("FRESH") == "True True 2", child
    assert_nowhere(child, "secret", "signing")


# -- read_key()'s full path: wipe_all() between the fill and the seal ----------------------------

@pytest.mark.parametrize("reader", ["read_key(path, 32, trust='root-managed')",
                                    "KeyRing(32).read_key(path, trust='root-managed')"])
def test_wipe_all_while_read_key_checks_the_end_of_the_file(reader: str) -> None:
    # The path files.fill_key_from_file takes for every read the C path does
    # not finish (trust= other than strict, an encoding, beneath=, a link):
    # key.readinto(fd), then _at_eof(fd), a read(2) without the GIL, then
    # key.readonly().  Another thread's wipe_all() lands in that read here on
    # purpose: _at_eof lets it run, and waits for it, before reading.  A fill
    # struck by wipe_all() must raise KeyDestroyedError (docs/lifetime.md).
    child = Child(run_python(PRELUDE + f'''
import tempfile
import securekeys.files as files
from securekeys import read_key, write_key
folder = tempfile.mkdtemp()
os.chmod(folder, 0o700)
path = os.path.join(folder, "key")
source = create_key(32)
write_key(path, source)
source.destroy()
go, done = threading.Event(), threading.Event()
def striker():
    go.wait()
    say("WIPED", wipe_all())
    done.set()
threading.Thread(target=striker, daemon=True).start()
real_at_eof = files._at_eof
def at_eof(fd):
    go.set()
    assert done.wait(TIMEOUT)
    return real_at_eof(fd)
files._at_eof = at_eof
try:
    key = {reader}
    say("OUTCOME returned", key.destroyed)
except KeyDestroyedError:
    say("OUTCOME KeyDestroyedError")
''', timeout=60))
    assert child.one("WIPED") == "1", child
    assert child.returncode == 0, child        # today: SIGABRT, "readonly() on a destroyed SecureKey"
    assert child.one("OUTCOME") == "KeyDestroyedError", child
