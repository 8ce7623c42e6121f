"""password_key's Argon2id: the reference library with guarded working memory.

Byte for byte libsodium's crypto_pwhash(ALG_ARGON2ID13) (pysodium is the
oracle), the lock policy applied to the working memory, failures that leave
nothing behind, and a memory scan of a child stopped in the middle of a
derivation: Argon2's blocks and the derived key are found only in guarded,
never-dumped memory -- and, as a control, the same scan finds libsodium's own
blocks in ordinary memory.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from hashlib import blake2b

import pysodium  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import _no_core_dumps, run_python, run_threads
from test_crypto import secure
import securekeys
from securekeys import LockError, SecureBuffer, SecureKey, _memory
from securekeys import crypto
from securekeys.crypto import password_key

ALG = pysodium.crypto_pwhash_ALG_ARGON2ID13
KIB, MIB = 1024, 1024 * 1024


def raw(buf: SecureBuffer) -> bytes:
    with buf.reading() as view:
        return bytes(view)


def derive(pw: bytes, salt: bytes, size: int, ops: int, mem: int) -> bytes:
    key = password_key(secure(pw), salt, size, opslimit=ops, memlimit=mem)
    assert type(key) is SecureKey and key.size == size
    try:
        return raw(key)
    finally:
        key.destroy()


# -- the same function as libsodium's -----------------------------------------

# opslimit x memlimit: the minimum, values that are not a multiple of 1024
# (libsodium divides, rounding down) nor of 4 KiB (Argon2 rounds the block
# count down to a multiple of 4), and INTERACTIVE.
GRID = [(ops, mem) for ops in (1, 2, 3, 4)
        for mem in (crypto.MEMLIMIT_MIN, 8192 + 1000, 12 * KIB + 1023, 65537, 1 * MIB + 5 * KIB)]
GRID += [(crypto.OPSLIMIT_INTERACTIVE, crypto.MEMLIMIT_INTERACTIVE), (1, crypto.MEMLIMIT_INTERACTIVE)]


@pytest.mark.parametrize("ops, mem", GRID)
def test_matches_libsodium_over_the_limits(ops: int, mem: int) -> None:
    salt = os.urandom(16)
    for size, pw in [(16, b"x"), (32, b"correct horse battery staple"), (64, os.urandom(200))]:
        assert derive(pw, salt, size, ops, mem) == pysodium.crypto_pwhash(size, pw, salt, ops, mem, ALG)


def test_matches_libsodium_at_moderate() -> None:
    # 256 MiB, three passes: about a second.  The limits passphrase key files use.
    pw, salt = b"a passphrase for a key file", os.urandom(16)
    ops, mem = crypto.OPSLIMIT_MODERATE, crypto.MEMLIMIT_MODERATE
    assert derive(pw, salt, 32, ops, mem) == pysodium.crypto_pwhash(32, pw, salt, ops, mem, ALG)


@pytest.mark.parametrize("size", [16, 17, 31, 32, 33, 63, 64, 65, 100, 1024, 4097])
def test_matches_libsodium_for_output_sizes(size: int) -> None:
    # Above 64 bytes Argon2's final hash is BLAKE2b chained (H'), below it one call.
    pw, salt = os.urandom(20), os.urandom(16)
    assert derive(pw, salt, size, 1, crypto.MEMLIMIT_MIN) == pysodium.crypto_pwhash(
        size, pw, salt, 1, crypto.MEMLIMIT_MIN, ALG)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pw=st.binary(min_size=1, max_size=300), salt=st.binary(min_size=16, max_size=16),
       size=st.integers(16, 96), ops=st.integers(1, 3),
       mem=st.integers(crypto.MEMLIMIT_MIN, 64 * KIB))
def test_matches_libsodium_property(pw: bytes, salt: bytes, size: int, ops: int, mem: int) -> None:
    assert derive(pw, salt, size, ops, mem) == pysodium.crypto_pwhash(size, pw, salt, ops, mem, ALG)


def test_concurrent_derivations_each_get_their_own_memory() -> None:
    # The callbacks find their derivation through a thread-local pointer.
    salt = os.urandom(16)
    passwords = [os.urandom(8 + i) for i in range(6)]
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        results[i] = derive(passwords[i], salt, 32, 1, 4 * MIB + 1000 * i)

    run_threads(work, len(passwords))
    for i, pw in enumerate(passwords):
        assert results[i] == pysodium.crypto_pwhash(32, pw, salt, 1, 4 * MIB + 1000 * i, ALG)


# -- the working memory: allocated, released, accounted -----------------------

def test_working_memory_is_given_back() -> None:
    before = (_memory.live_buffers(), securekeys.report()["mapped_bytes"])
    derive(b"pw", bytes(16), 32, 1, 8 * MIB)
    assert (_memory.live_buffers(), securekeys.report()["mapped_bytes"]) == before


@pytest.mark.skipif(open("/proc/sys/vm/overcommit_memory").read().strip() == "1",
                    reason="with overcommit always, 4 TiB of working memory would be granted")
def test_no_memory_is_a_memory_error_that_leaves_nothing_behind() -> None:
    live = _memory.live_buffers()
    with pytest.raises(MemoryError) as raised:
        password_key(secure(b"pw"), bytes(16), opslimit=1, memlimit=crypto.MEMLIMIT_MAX)
    assert type(raised.value) is MemoryError      # the allocator's own, not a LockError
    assert _memory.live_buffers() == live


# The lock policy, for a process that cannot lock much: RLIMIT_MEMLOCK 1 MiB,
# and as root CAP_IPC_LOCK dropped by becoming nobody (as test_hardening does).
POLICY_CHILD = """
import json, os, resource, warnings
import encodings.ascii, encodings.utf_8
import pysodium
from securekeys import SecureBuffer, LockError, SecurityWarning, set_lock_policy
from securekeys import crypto, _memory
resource.setrlimit(resource.RLIMIT_MEMLOCK, (1 << 20, 1 << 20))
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
set_lock_policy({policy!r})
pw = SecureBuffer(8)
with pw.writing() as v:
    v[:] = b"password"
salt = bytes(range(16))
out = {{}}
for name, mem in [("small", crypto.MEMLIMIT_MIN), ("interactive", crypto.MEMLIMIT_INTERACTIVE)]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            key = crypto.password_key(pw, salt, opslimit=1, memlimit=mem)
            with key.reading() as view:
                right = bytes(view) == pysodium.crypto_pwhash(32, b"password", salt, 1, mem,
                                                              pysodium.crypto_pwhash_ALG_ARGON2ID13)
            key.destroy()
            del key
            out[name] = ["ok", right]
        except LockError as error:
            out[name] = ["LockError", str(error)]
    out[name + " warnings"] = [w.category.__name__ for w in caught]
out["live"] = _memory.live_buffers()
print(json.dumps(out))
"""


@pytest.mark.parametrize("policy", ["best-effort", "warn", "require"])
def test_lock_policy_applies_to_the_working_memory(policy: str) -> None:
    result = run_python(POLICY_CHILD.format(policy=policy))
    assert result.returncode == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["small"] == ["ok", True]                 # 8 KiB is lockable
    assert out["small warnings"] == []
    assert out["live"] == 1                             # the password alone
    if policy == "require":
        # 64 MiB of working memory cannot be locked: refused, nothing derived.
        assert out["interactive"][0] == "LockError" and "require" in out["interactive"][1]
    else:
        assert out["interactive"] == ["ok", True]       # unlocked, as crypto_pwhash's was
        expected = ["SecurityWarning"] if policy == "warn" else []
        assert out["interactive warnings"] == expected


# -- memory scan of a derivation in flight -------------------------------------

def first_block_prefix(pw: bytes, salt: bytes, size: int, ops: int, mem: int) -> bytes:
    """The first 32 bytes of Argon2id's block B[0][0] (RFC 9106, section 3.2):
    H'^1024(H0 || LE32(0) || LE32(0)), whose first 32 bytes are those of
    BLAKE2b-512(LE32(1024) || H0 || LE32(0) || LE32(0))."""
    def le32(n: int) -> bytes:
        return struct.pack("<I", n)
    h0 = blake2b(le32(1) + le32(size) + le32(mem // 1024) + le32(ops) + le32(0x13) + le32(2)
                 + le32(len(pw)) + pw + le32(len(salt)) + salt + le32(0) + le32(0),
                 digest_size=64).digest()
    return blake2b(le32(1024) + h0 + le32(0) + le32(0), digest_size=64).digest()[:32]


SCAN_CHILD = """
import os, sys
mode, mem = sys.argv[1], int(sys.argv[2])
import pysodium
from securekeys import SecureBuffer
from securekeys import crypto
PW, SALT = b"scan me: a password", bytes(range(16))
pw = SecureBuffer(len(PW))
with pw.writing() as v:
    v[:] = PW
pw.readonly()
print("ready", flush=True)
if mode == "securekeys":
    key = crypto.password_key(pw, SALT, 32, opslimit=1, memlimit=mem)
else:
    key = pysodium.crypto_pwhash(32, PW, SALT, 1, mem, pysodium.crypto_pwhash_ALG_ARGON2ID13)
print("done", flush=True)
sys.stdin.readline()
"""
SCAN_PW, SCAN_SALT, SCAN_MEM = b"scan me: a password", bytes(range(16)), 256 * MIB


@dataclass
class Vma:
    start: int
    end: int
    perms: str
    flags: set[str]
    name: str


def vmas(pid: int) -> list[Vma]:
    found: list[Vma] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                found.append(Vma(start, end, head[1], set(), head[5] if len(head) > 5 else ""))
            elif head[0] == "VmFlags:":
                found[-1].flags = set(head[1:])
    return found


def hits(pid: int, needle: bytes, regions: list[Vma]) -> list[tuple[int, Vma]]:
    """Every address of `needle` in the stopped process `pid`, with its VMA.
    /proc/PID/mem reads PROT_NONE pages too, so guarded memory is scanned."""
    found: list[tuple[int, Vma]] = []
    step = 16 * MIB
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for vma in regions:
            if vma.name == "[vsyscall]":     # above what an off_t can seek to
                continue
            for at in range(vma.start, vma.end, step):
                try:
                    mem.seek(at)
                    chunk = mem.read(min(step + len(needle) - 1, vma.end - at))
                except OSError:      # [vvar], [vsyscall] and the like
                    break
                i = chunk.find(needle)
                while 0 <= i < step:   # past `step`: the next chunk's
                    found.append((at + i, vma))
                    i = chunk.find(needle, i + 1)
    return found


def wait_for_first_block(proc: subprocess.Popen[bytes], block: bytes) -> None:
    """Return once the running child's working memory begins with `block`.
    Its first block is where the mapping starts (libsodium's) or `memlimit`
    bytes before where it ends (a SecureBuffer ends at its trailing guard).
    Fails if the child says "done" (or dies) first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 120     # a hung child, not a decision
    with open(f"/proc/{proc.pid}/mem", "rb", buffering=0) as mem:
        while not select.select([proc.stdout], [], [], 0)[0] and time.monotonic() < deadline:
            for vma in vmas(proc.pid):
                if not vma.perms.startswith("rw") or vma.end - vma.start < SCAN_MEM:
                    continue
                for start in (vma.start, vma.end - SCAN_MEM):
                    try:
                        mem.seek(start)
                        if mem.read(len(block)) == block:
                            return
                    except OSError:    # unmapped since /proc/PID/smaps was read
                        pass
    raise AssertionError("the child's derivation ended before it was seen")


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    while True:        # the stop is asynchronous: wait until the kernel says "T"
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.001)


def guarded(regions: list[Vma], vma: Vma) -> bool:
    """dontdump, with a PROT_NONE page right before and right after it."""
    before = [v for v in regions if v.end == vma.start]
    after = [v for v in regions if v.start == vma.end]
    return ("dd" in vma.flags and bool(before) and before[0].perms.startswith("---")
            and bool(after) and after[0].perms.startswith("---"))


def scan_derivation(mode: str) -> tuple[list[tuple[int, Vma]], list[Vma], list[tuple[int, Vma]], list[Vma]]:
    """Run the child; stop it in the middle of Argon2's first pass and find
    B[0][0]; let it finish and find the derived key.  Returns both scans."""
    block = first_block_prefix(SCAN_PW, SCAN_SALT, 32, 1, SCAN_MEM)
    key = pysodium.crypto_pwhash(32, SCAN_PW, SCAN_SALT, 1, SCAN_MEM, ALG)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCAN_CHILD), mode, str(SCAN_MEM)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_no_core_dumps)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == b"ready\n"
        # The stop is decided by the child's own progress, not by a timer:
        # once the working memory (the one mapping of at least `memlimit`
        # bytes) starts with B[0][0], Argon2 is in its first and only pass,
        # with most of the pass still to come before anything is wiped.
        wait_for_first_block(proc, block)
        stop(proc.pid)
        during_regions = vmas(proc.pid)
        during = hits(proc.pid, block, during_regions)
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.stdout.readline() == b"done\n"
        stop(proc.pid)
        after_regions = vmas(proc.pid)
        after = hits(proc.pid, key, after_regions)
        after += hits(proc.pid, block, after_regions)
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
        return during, during_regions, after, after_regions
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_scan_finds_argon2_blocks_only_in_guarded_memory() -> None:
    during, regions, after, after_regions = scan_derivation("securekeys")
    # B[0][0] is there (the scan can see it) and only in guarded memory.
    assert during, "B[0][0] was not found: the scan saw nothing"
    for address, vma in during:
        assert guarded(regions, vma), (hex(address), vma)
        assert vma.end - vma.start >= SCAN_MEM          # the working memory itself
    # Afterwards: the working memory is wiped and gone, the key is in guarded
    # memory (a SecureKey) and nowhere else.
    assert after, "the derived key was not found: the scan saw nothing"
    for address, vma in after:
        assert guarded(after_regions, vma), (hex(address), vma)
        assert vma.end - vma.start < SCAN_MEM
    assert not any(v.end - v.start >= SCAN_MEM for v in after_regions)


def test_scan_finds_libsodiums_blocks_in_ordinary_memory() -> None:
    # The negative control: libsodium's crypto_pwhash keeps the same block in
    # memory that is neither dontdump nor guarded -- the scan can fail.
    during, regions, _, _ = scan_derivation("libsodium")
    assert during
    assert any("dd" not in vma.flags and not guarded(regions, vma) for _, vma in during), during
