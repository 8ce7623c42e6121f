"""Honest reports, lock policy, harden(), wipe_all(), fork safety, secretmem."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import securekeys
from securekeys import (
    KeyFileError, LockError, Protection, SecureBuffer, SecurityWarning, create_key, read_key,
    report, set_backend, set_lock_policy, wipe_all,
)
from securekeys._memory import live_buffers

from conftest import assert_dies, run_python

ROOT = Path(__file__).resolve().parent.parent

# A child with a small RLIMIT_MEMLOCK and no CAP_IPC_LOCK (as root: it drops
# to an unprivileged uid after start-up), allocating 2-page buffers until the
# limit bites.  It prints one JSON line with what happened.
LIMITED = """
import json, os, resource, warnings
import encodings.ascii  # the interpreter's files under /root are out of reach after setuid
import securekeys
from securekeys import SecureBuffer, LockError, SecurityWarning, set_lock_policy
from securekeys._memory import live_buffers
resource.setrlimit(resource.RLIMIT_MEMLOCK, (256 * 1024, 256 * 1024))
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
set_lock_policy({policy!r})
buffers, lock_error, live_at_error = [], None, None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(200):
        try:
            buffers.append(SecureBuffer(5000))
        except LockError as error:
            lock_error, live_at_error = str(error), live_buffers()
            break
print(json.dumps({{
    "allocated": len(buffers),
    "locked": [b.locked for b in buffers],
    "lock_error": lock_error,
    "live_at_error": live_at_error,
    "warnings": [str(w.category.__name__) for w in caught],
    "unlocked_reported": securekeys.report()["unlocked_buffers"],
}}))
"""


def run_limited(policy: str) -> dict[str, object]:
    result = run_python(LIMITED.format(policy=policy))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_require_policy_raises_lock_error_at_the_first_unlockable_allocation() -> None:
    out = run_limited("require")
    assert out["lock_error"] and "require" in out["lock_error"]
    assert 10 <= out["allocated"] < 200
    assert all(out["locked"])                       # everything handed out is locked
    assert out["live_at_error"] == out["allocated"]  # the failed one left nothing live
    assert issubclass(LockError, MemoryError)


@pytest.mark.parametrize("allocation", ["create_key(32)", "create_key(3 * 1024 * 1024)",
                                        "ring.create_key()"])
def test_a_require_refusal_leaves_no_mapping_behind(allocation: str) -> None:
    # The first allocation maps a chunk (or a KeyRing run) before it finds
    # that it cannot be locked: the refusal must unmap it, not pool it.  The
    # mappings compared leave out the interpreter's own heap (private
    # read-write anonymous memory), which raising an exception may grow.
    result = run_python(f"""
import json, os, resource
import encodings.ascii
from securekeys import KeyRing, LockError, create_key, set_lock_policy
from securekeys._memory import _allocator_stats
def mappings():
    with open("/proc/self/maps") as maps:
        return sorted(line.split()[0] + " " + line.split()[1] for line in maps
                      if not (line.split()[1] == "rw-p" and len(line.split()) == 5))
resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
os.setgroups([])
os.setgid(65534)
os.setuid(65534)              # no CAP_IPC_LOCK: the limit bites
set_lock_policy("require")
ring = KeyRing(32)
before, stats = mappings(), _allocator_stats()
try:
    {allocation}
except LockError:
    refused = True
else:
    refused = False
after, then = mappings(), _allocator_stats()
print(json.dumps([refused, sorted(set(after) ^ set(before)),
                  [stats[k] for k in ("chunks", "mapped_bytes", "pool_bytes", "locked_bytes")],
                  [then[k] for k in ("chunks", "mapped_bytes", "pool_bytes", "locked_bytes")]]))
""")
    assert result.returncode == 0, result.stderr
    refused, changed, before, after = json.loads(result.stdout)
    assert refused
    assert changed == [] and after == before == [0, 0, 0, 0], result.stdout


def test_best_effort_policy_tells_the_truth() -> None:
    out = run_limited("best-effort")
    assert out["allocated"] == 200 and out["lock_error"] is None
    locked = out["locked"]
    assert isinstance(locked, list) and locked[0] and not locked[-1]
    assert out["unlocked_reported"] == locked.count(False) > 0
    assert out["warnings"] == []


def test_warn_policy_warns_once() -> None:
    out = run_limited("warn")
    assert out["allocated"] == 200
    assert out["warnings"] == ["SecurityWarning"]
    assert issubclass(SecurityWarning, UserWarning)


def test_secretmem_past_the_memlock_limit_is_a_lock_error() -> None:
    # secretmem is always locked: past RLIMIT_MEMLOCK nothing can be allocated,
    # whatever the policy, and the error says so.
    result = run_python(LIMITED.format(policy="best-effort").replace(
        "set_lock_policy(", "securekeys.set_backend('secretmem'); set_lock_policy("))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["lock_error"] and "secretmem is always locked" in out["lock_error"]
    assert all(out["locked"]) and out["live_at_error"] == out["allocated"] > 0


def test_bad_lock_policy_and_backend() -> None:
    with pytest.raises(ValueError, match="lock policy"):
        set_lock_policy("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        set_backend("tmpfs")  # type: ignore[arg-type]
    assert securekeys.get_lock_policy() == "best-effort"
    assert securekeys.get_backend() == "sodium"


def test_a_bad_backend_in_the_environment_refuses_every_allocation() -> None:
    # Import succeeds (the command line must be able to say it in one line);
    # no key, buffer, ring key or report exists on a backend nobody asked for.
    result = run_python("""
import securekeys
for make in (lambda: securekeys.create_key(32), lambda: securekeys.SecureBuffer(8),
             lambda: securekeys.KeyRing(32).create_key(), securekeys.report):
    try:
        make()
        print("ALLOCATED")
    except ValueError as refusal:
        print("REFUSED", "tmpfs" in str(refusal))
print(securekeys._memory.live_buffers())
securekeys.set_backend("sodium")     # an explicit choice replaces the bad one
securekeys.create_key(32).destroy()
print("OK")
""", env=dict(os.environ, SECUREKEYS_BACKEND="tmpfs"))
    assert result.returncode == 0, result
    assert result.stdout.decode().split("\n") == ["REFUSED True"] * 4 + ["0", "OK", ""]


def test_report_counts_what_is_live_and_locked() -> None:
    before = report()
    keys = [create_key(32) for _ in range(10)]
    now = report()
    assert now["live_buffers"] == before["live_buffers"] + 10
    assert now["unlocked_buffers"] == 0 and now["locked_bytes"] > 0
    for field in ("libsodium_version", "backend", "rlimit_memlock", "max_map_count", "mappings",
                  "core_limit", "dumpable", "swap_total_kb"):
        assert field in now
    assert now["backend"] == "sodium" and now["max_map_count"] > 1000
    del keys


def test_harden_is_visible_from_outside() -> None:
    # The child drops to an unprivileged uid first: only then does "not
    # dumpable" show from outside (the kernel hands its /proc files to root).
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import os, sys, encodings.ascii, securekeys
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
                # Changing uid made the process non-dumpable: start from dumpable.
                securekeys._memory._set_dumpable(True)
            print("ready", flush=True)
            sys.stdin.readline()
            applied = securekeys.harden()
            print(applied["dumpable"], flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        owner_before = os.stat(f"/proc/{child.pid}/mem").st_uid
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "False"
        limits = Path(f"/proc/{child.pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"]
        prlimit = subprocess.run(["prlimit", "--pid", str(child.pid), "--core", "--raw", "--noheadings",
                                  "--output", "SOFT,HARD"], capture_output=True, text=True)
        if prlimit.returncode == 0:
            assert prlimit.stdout.split() == ["0", "0"]
        if os.geteuid() == 0:
            assert owner_before == 65534
            assert os.stat(f"/proc/{child.pid}/mem").st_uid == 0
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_wipe_all_destroys_everything() -> None:
    keys = [create_key(32) for _ in range(5)]
    buffers = [SecureBuffer(8) for _ in range(3)]
    keys[0].destroy()
    assert wipe_all() >= 7
    assert all(b.destroyed for b in keys + buffers)
    assert wipe_all() == 0


def test_views_die_after_wipe_all() -> None:
    assert_dies("""
from securekeys import SecureBuffer, wipe_all
buf = SecureBuffer(16)
view = memoryview(buf)
print(wipe_all())
view[0]
print('REACHED')
""", signal.SIGSEGV)


# -- fork -------------------------------------------------------------------------

FORK = """
import ctypes, os, signal, sys
from securekeys import create_key, SecureBuffer, Protection
key = create_key(32)
with key.reading() as view:
    expected = bytes(view)
stale = memoryview(SecureBuffer(16))
pid = os.fork()
if pid == 0:
    {child}
    sys.exit(0)
_, status = os.waitpid(pid, 0)
with key.reading() as view:
    assert bytes(view) == expected      # the parent is untouched
print(status, flush=True)
"""


def fork_status(child: str) -> tuple[int, bytes]:
    result = run_python(FORK.format(child=child))
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1]), result.stderr


def test_child_that_never_touches_a_key_exits_normally() -> None:
    status, stderr = fork_status("print('child ok', flush=True)")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, stderr
    assert b"fatal" not in stderr


def test_child_touching_a_key_dies_naming_the_fork() -> None:
    status, stderr = fork_status("key.reading()")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT
    assert b"securekeys: fatal: " in stderr and b"fork()" in stderr


def test_child_sees_keys_destroyed() -> None:
    status, _ = fork_status("sys.exit(0 if key.state is Protection.DESTROYED and key.destroyed else 3)")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_stale_view_dies_in_the_child() -> None:
    status, _ = fork_status("stale[0]")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV


def test_child_pages_are_wiped_by_the_kernel() -> None:
    # Lift the protection by hand in the child: MADV_WIPEONFORK left zeros.
    status, _ = fork_status("""
    libc = ctypes.CDLL(None)
    address = key._data_address()
    page = address & ~(os.sysconf('SC_PAGESIZE') - 1)
    assert libc.mprotect(ctypes.c_void_p(page), os.sysconf('SC_PAGESIZE'), 1) == 0
    sys.exit(0 if ctypes.string_at(address, 32) == bytes(32) else 4)
""".strip().replace("\n    ", "\n    "))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_child_can_make_new_keys() -> None:
    status, _ = fork_status("k = create_key(32); k.noaccess(); k == create_key(32); k.destroy()")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_multiprocessing_fork_child_dies_on_touch() -> None:
    result = run_python("""
import multiprocessing, signal
from securekeys import create_key

def touch(key):
    with key.reading() as view:
        print(bytes(view))

if __name__ == '__main__':
    key = create_key(32)
    ctx = multiprocessing.get_context('fork')
    p = ctx.Process(target=touch, args=(key,))
    p.start(); p.join()
    with key.reading() as view:
        assert len(bytes(view)) == 32
    print(p.exitcode)
""")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) == -signal.SIGABRT
    assert b"fork()" in result.stderr


LIBC_FORK = """
import ctypes, os, sys
from securekeys import create_key, crypto
key = create_key(32)
view = memoryview(key)
pid = ctypes.CDLL(None).fork()        # below Python: os.register_at_fork never runs
if pid == 0:
    {child}
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert crypto.aead_encrypt(key, b"parent", bytes(24))   # the parent is untouched
print(status, flush=True)
"""


@pytest.mark.parametrize("child", [
    "crypto.aead_encrypt(key, b'x', bytes(24))",
    "key.noaccess()",
    "key == create_key(32)",
])
def test_a_fork_below_python_still_makes_parent_keys_fatal(child: str) -> None:
    # Before: the child's key read as zeros yet stayed READONLY, and
    # aead_encrypt silently encrypted under the all-zero key.
    result = run_python(LIBC_FORK.format(child=child))
    assert result.returncode == 0, result.stderr
    status = int(result.stdout.split()[-1])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT, result
    assert b"securekeys: fatal: " in result.stderr and b"fork()" in result.stderr


def test_a_fork_below_python_kills_a_stale_view_naming_the_fork() -> None:
    result = run_python(LIBC_FORK.format(child="view[0]"))
    assert result.returncode == 0, result.stderr
    status = int(result.stdout.split()[-1])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV, result
    assert result.stderr == (b"securekeys: fatal: SIGSEGV on a key inherited through fork() "
                             b"(keys do not survive into a child process)\n")


def test_a_fork_below_python_leaves_the_child_free_to_make_keys() -> None:
    result = run_python(LIBC_FORK.format(
        child="k = create_key(32); assert key.destroyed and not k.destroyed; k.destroy()"))
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) == 0, result


# -- secretmem ------------------------------------------------------------------------

def test_secretmem_keys_live_in_secretmem_mappings() -> None:
    result = run_python("""
import securekeys
securekeys.set_backend('secretmem')
key = securekeys.create_key(32)
address = key._data_address()
for line in open('/proc/self/maps'):
    start, end = (int(x, 16) for x in line.split()[0].split('-'))
    if start <= address < end:
        print(line.strip())
print(securekeys.report()['backend'], key.locked, key.state.name)
""")
    assert result.returncode == 0, result.stderr
    mapping, summary = result.stdout.decode().strip().splitlines()
    assert "secretmem" in mapping and mapping.split()[1] == "r--s"
    assert summary == "secretmem True READONLY"


def test_secretmem_passes_the_same_suite() -> None:
    env = dict(os.environ, SECUREKEYS_BACKEND="secretmem")
    # In this process's cwd, not the checkout: under `make matrix` the
    # checkout's securekeys/ (no compiled modules) must not come first.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
         *(str(ROOT / "tests" / name) for name in (
             "test_memory.py", "test_files.py", "test_keyring.py", "test_pool.py",
             "test_crypto.py", "test_cli.py", "test_crypto_stack.py", "test_crypto_toctou.py"))],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_secretmem_stale_view_in_a_child_never_reaches_the_childs_new_key() -> None:
    # secretmem is MADV_DONTFORK: the parent's range is free in the child.
    # Unreserved, the child's next chunk landed there and a view kept from
    # the parent read (and wrote) the child's new key.
    result = run_python("""
import os, securekeys
securekeys.set_backend('secretmem')
old = securekeys.SecureBuffer(32)
view = memoryview(old)
pid = os.fork()
if pid == 0:
    new = securekeys.SecureBuffer(32)
    with new.writing() as w:
        w[:] = b"C" * 32
    print("SAME ADDRESS" if new._data_address() == old._data_address() else "MOVED", flush=True)
    view[0]
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(status)
""")
    assert result.returncode == 0, result.stderr
    moved, status = result.stdout.split()
    assert moved == b"MOVED"
    assert os.WIFSIGNALED(int(status)) and os.WTERMSIG(int(status)) == signal.SIGSEGV
    assert b"securekeys: fatal: SIGSEGV on a key inherited through fork()" in result.stderr


def test_secretmem_child_of_fork_exits_normally() -> None:
    result = run_python("""
import os, sys, securekeys
securekeys.set_backend('secretmem')
key = securekeys.create_key(32)
pid = os.fork()
if pid == 0:
    sys.exit(0 if key.destroyed else 3)
_, status = os.waitpid(pid, 0)
print(status, key.destroyed)
""")
    assert result.returncode == 0 and result.stdout.split() == [b"0", b"False"], result


# -- fuzzing -------------------------------------------------------------------------

KINDS = ["regular", "fifo", "directory", "symlink", "dangling", "missing", "devnull"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), content=st.binary(max_size=200),
       mode=st.integers(min_value=0, max_value=0o777), size=st.integers(min_value=1, max_value=128))
def test_fuzz_read_key(tmp_path: Path, kind: str, content: bytes, mode: int, size: int) -> None:
    directory = tmp_path / os.urandom(6).hex()
    directory.mkdir()
    path = directory / "key"
    if kind in ("regular", "symlink"):
        target = directory / "target" if kind == "symlink" else path
        target.write_bytes(content)
        target.chmod(mode)
        if kind == "symlink":
            path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path, mode)
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(directory / "nowhere")
    elif kind == "devnull":
        path = Path("/dev/null")
    gc.collect()   # a baseline without garbage left by earlier examples
    fds, live = len(os.listdir("/proc/self/fd")), live_buffers()
    try:
        key = read_key(path, size)
    except KeyFileError:
        assert kind != "regular" or len(content) != size or mode & 0o077
    except FileNotFoundError:
        assert kind == "missing"
    except IsADirectoryError:
        assert kind == "directory"
    else:
        assert kind == "regular" and len(content) == size and not mode & 0o077
        with key.reading() as view:
            assert bytes(view) == content
        assert key.state is Protection.READONLY
        key.destroy()
        del key
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert live_buffers() == live


@settings(max_examples=150, deadline=None)
@given(content=st.binary(max_size=5000), size=st.integers(min_value=1, max_value=5000),
       chunks=st.integers(min_value=1, max_value=7))
def test_fuzz_readinto(content: bytes, size: int, chunks: int) -> None:
    r, w = os.pipe()
    try:
        step = max(1, len(content) // chunks)
        pid = os.fork()
        if pid == 0:   # a writer in pieces, so reads come back short
            os.close(r)
            for i in range(0, len(content), step):
                os.write(w, content[i:i + step])
            os._exit(0)
        os.close(w)
        w = -1
        buf = SecureBuffer(size)
        got = buf.readinto(r)
        os.waitpid(pid, 0)
        assert got == min(size, len(content))
        assert bytes(memoryview(buf))[:got] == content[:got]
        assert bytes(memoryview(buf))[got:] == bytes(size - got)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
