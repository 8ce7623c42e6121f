"""The fatal path under hostile conditions: it wipes first, never blocks, says one line.

Each case runs in a fresh interpreter; a C-level SIGABRT handler installed by
the dying child runs after the fatal path (abort() is its last act) and
reports, through stdout, whether another live key was wiped.
"""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from securekeys import SecureBuffer

from conftest import assert_dies, run_python

# A child prelude: `report_on_abort(key)` arranges for the SIGABRT handler to
# read the key's bytes through /proc/self/mem (which reads PROT_NONE pages
# too) and print WIPED, GONE (unmapped) or NOT WIPED.
REPORT_ON_ABORT = """
import ctypes, os, signal
import securekeys
from securekeys import SecureBuffer, create_key

def report_on_abort(key):
    address, size = key._data_address(), key.size
    mem = os.open("/proc/self/mem", os.O_RDONLY)
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int)
    @handler_type
    def on_abort(signum):
        try:
            data = os.pread(mem, size, address)
            verdict = b"WIPED" if data == bytes(size) else b"NOT WIPED"
        except OSError:
            verdict = b"GONE"
        os.write(1, verdict)
    ctypes.CDLL(None).signal(signal.SIGABRT, on_abort)
    report_on_abort.keep = on_abort
"""


def run_child(code: str, **popen: object) -> subprocess.Popen[bytes]:
    def no_core() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(REPORT_ON_ABORT + code)],
                            stdout=subprocess.PIPE, preexec_fn=no_core, **popen)  # type: ignore[call-overload]


def test_a_full_stderr_pipe_does_not_keep_the_keys_alive() -> None:
    # Nobody reads stderr and it is full: the child must still wipe and die.
    child = run_child("""
key = create_key(32)
report_on_abort(key)
filler = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK)   # a description of its own
try:
    while True:
        os.write(filler, b"x" * 4096)
except BlockingIOError:
    pass
victim = create_key(8)
victim.destroy()
victim.readonly()
""", stderr=subprocess.PIPE)
    assert child.stdout is not None
    try:
        child.wait(timeout=30)     # blocked on stderr forever = a timeout here
    finally:
        child.kill()
        child.wait()
    stdout = child.stdout.read()
    assert child.returncode == -signal.SIGABRT
    assert stdout == b"WIPED"


def test_a_closed_stderr_with_sigpipe_at_its_default_still_wipes_and_aborts() -> None:
    child = run_child("""
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
key = create_key(32)
report_on_abort(key)
os.read(0, 1)                       # the parent has closed our stderr's reader
victim = create_key(8)
victim.destroy()
victim.readonly()
""", stderr=subprocess.PIPE, stdin=subprocess.PIPE)
    assert child.stderr is not None and child.stdin is not None and child.stdout is not None
    child.stderr.close()
    child.stdin.write(b"g")
    child.stdin.close()
    stdout = child.stdout.read()
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGABRT
    assert stdout == b"WIPED"


def test_the_fatal_message_is_one_line_whatever_the_class_name_holds() -> None:
    result = run_python("""
from securekeys import SecureBuffer
Evil = type("Evil\\nsecurekeys: fatal: nothing to see\\r", (SecureBuffer,), {})
buf = Evil(8)
buf.destroy()
buf.readonly()
""")
    assert result.returncode == -signal.SIGABRT
    assert result.stderr.count(b"\n") == 1 and result.stderr.endswith(b"\n"), result.stderr
    assert result.stderr.startswith(b"securekeys: fatal: readonly() on a destroyed Evil?"), result.stderr
    assert b"\r" not in result.stderr


# Fill the process's mapping count (vm.max_map_count) with one-page mappings
# of alternating protection, so that none merges with its neighbour.  Python
# itself may unmap an arena at any moment, so fill() is called again right
# before the operation under test.
FILL_FUNCTION = """
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
def fill():
    filled = 0
    while libc.mmap(None, 4096, filled % 2, 0x22, -1, 0) not in (None, 2**64 - 1):
        filled += 1
    return filled
"""
FILL_MAPPINGS = FILL_FUNCTION + """
assert fill() > 1000
"""


# Three READONLY KeyRing pages (two 2000-byte keys each) merge into one
# mapping; wiping a key on the middle page must split it twice.
MIDDLE_PAGE_KEY = """
ring = securekeys.KeyRing(2000)
keys = [ring.create_key() for _ in range(6)]
address, size = keys[2]._data_address(), keys[2].size
mem = os.open("/proc/self/mem", os.O_RDONLY)
"""


@pytest.mark.parametrize("how", ["destroy", "collect"])
def test_destroy_at_the_mapping_limit_wipes_and_does_not_abort(how: str) -> None:
    result = run_python(REPORT_ON_ABORT + MIDDLE_PAGE_KEY + FILL_MAPPINGS + f"""
fill()
if {how == "destroy"!r}:
    keys[2].destroy()
else:
    del keys[2]
print("WIPED" if os.pread(mem, size, address) == bytes(size) else "NOT WIPED")
""")
    assert result.returncode == 0, result
    assert result.stdout == b"WIPED\n", result


def test_the_fatal_path_wipes_at_the_mapping_limit() -> None:
    result = run_python(REPORT_ON_ABORT + MIDDLE_PAGE_KEY + """
report_on_abort(keys[2])
""" + FILL_MAPPINGS + """
fill()
securekeys._memory._fatal("at the limit")
""")
    assert result.returncode == -signal.SIGABRT, result
    assert result.stdout in (b"WIPED", b"GONE"), result
    assert result.stderr == b"securekeys: fatal: at the limit\n"


# -- faults the MMU raises on guarded memory ------------------------------------------

FAULTS = {
    "stale view after destroy()": ("b = SecureBuffer(16); v = memoryview(b); b.destroy(); v[0]",
                                   "a destroyed secure buffer"),
    "stale view after noaccess()": ("b = SecureBuffer(16); v = memoryview(b); b.noaccess(); v[0]",
                                    "a NOACCESS secure buffer"),
    "read past the end": ("b = SecureBuffer(16); ctypes.string_at(b._data_address(), 17)",
                          "a guard page between secure buffers"),
    "write to a READONLY key": ("k = create_key(16); ctypes.memset(k._data_address(), 0, 1)",
                                "a READONLY secure buffer"),
    "KeyRing page": ("r = securekeys.KeyRing(32); k = r.create_key(); v = memoryview(k); k.noaccess(); v[0]",
                     "a NOACCESS KeyRing page"),
}


@pytest.mark.parametrize("case", FAULTS)
def test_a_fault_on_guarded_memory_says_what_was_hit_and_dies_of_the_signal(case: str) -> None:
    code, words = FAULTS[case]
    result = run_python(REPORT_ON_ABORT + code + "\nprint('REACHED')\n")
    assert result.returncode == -signal.SIGSEGV, result
    assert result.stderr.startswith(b"securekeys: fatal: SIGSEGV on " + words.encode()), result.stderr
    assert result.stderr.count(b"\n") == 1 and result.stderr.endswith(b"\n")
    assert b"REACHED" not in result.stdout


# An observer installed in front of securekeys' handler calls it, then looks
# at another live key through /proc/self/mem: by then it must be wiped.
OBSERVE_FAULT = """
class SigAction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]
libc = ctypes.CDLL(None)
ours = SigAction()
assert libc.sigaction(signal.SIGSEGV, None, ctypes.byref(ours)) == 0
handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
call_ours = handler_type(ours.handler)
other = create_key(32)
address = other._data_address()
mem = os.open("/proc/self/mem", os.O_RDONLY)
@handler_type
def observer(signum, info, context):
    call_ours(signum, info, context)
    os.write(1, b"WIPED" if os.pread(mem, 32, address) == bytes(32) else b"NOT WIPED")
mine = SigAction()
mine.handler = ctypes.cast(observer, ctypes.c_void_p)
mine.flags = 4   # SA_SIGINFO
assert libc.sigaction(signal.SIGSEGV, ctypes.byref(mine), None) == 0
"""


def test_a_fault_on_guarded_memory_wipes_every_live_key_first() -> None:
    result = run_python(REPORT_ON_ABORT + OBSERVE_FAULT + FAULTS["stale view after destroy()"][0])
    assert result.returncode == -signal.SIGSEGV, result
    assert result.stdout == b"WIPED", result
    assert result.stderr.startswith(b"securekeys: fatal: SIGSEGV on a destroyed secure buffer")


def test_faults_elsewhere_go_to_the_previous_handler_untouched() -> None:
    # faulthandler, enabled before securekeys is imported, still reports a
    # fault outside guarded memory; a fault inside is ours, then the signal.
    for code, ours in (("ctypes.string_at(8, 1)", False), (FAULTS["stale view after destroy()"][0], True)):
        result = subprocess.run([sys.executable, "-X", "faulthandler", "-c", REPORT_ON_ABORT + code],
                                capture_output=True, timeout=60)
        assert result.returncode == -signal.SIGSEGV, result
        assert (b"securekeys: fatal:" in result.stderr) is ours, result.stderr
        assert (b"Fatal Python error: Segmentation fault" in result.stderr) is not ours, result.stderr


def test_a_sigsegv_sent_by_kill_is_not_mistaken_for_a_fault() -> None:
    result = run_python(REPORT_ON_ABORT + "key = create_key(32)\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert result.returncode == -signal.SIGSEGV, result
    assert result.stderr == b"", result


# -- what a review tried next ----------------------------------------------------------

def test_a_fault_kills_even_when_another_thread_makes_the_page_readable_again() -> None:
    # A thread without the GIL faults on a NOACCESS buffer; while the fatal
    # path wipes, the main thread (holding the GIL, unaware) makes that page
    # readable again.  The faulting access would now succeed: the process must
    # die of the signal all the same, never carry on with its keys zeroed.
    result = run_python(REPORT_ON_ABORT + """
import threading, time
witness = SecureBuffer(64 << 20)          # an older chunk, wiped after the hot one
with witness.writing() as view:
    view[-16:] = b"\\xa5" * 16
hot = SecureBuffer(32)
hot.noaccess()
mem = os.open("/proc/self/mem", os.O_RDONLY)
last = witness._data_address() + len(witness) - 16
scratch = ctypes.create_string_buffer(1)
threading.Thread(target=lambda: ctypes.memmove(scratch, hot._data_address(), 1), daemon=True).start()
while os.pread(mem, 16, last) != bytes(16):   # the wipe has begun
    pass
hot.readonly()
time.sleep(1)
print("STILL RUNNING", flush=True)
""")
    assert result.returncode == -signal.SIGSEGV, result
    assert b"STILL RUNNING" not in result.stdout
    assert result.stderr == b"securekeys: fatal: SIGSEGV on a NOACCESS secure buffer\n"


@pytest.mark.parametrize("how", ["wipe_all", "KeyRing.destroy"])
def test_wipe_all_runs_no_python_code_while_it_walks_the_live_buffers(how: str) -> None:
    # A subclass's destroy() may run any Python code (logging, here the
    # collector, which frees the next buffer in the walk), or skip the wipe.
    result = run_python("""
import gc
import securekeys
from securekeys import KeyRing, SecureKey
ring = KeyRing(32)
class Logged(SecureKey):
    def destroy(self):
        gc.collect()                         # no super().destroy(): it wipes nothing
in_ring = {how == "KeyRing.destroy"!r}
def garbage():
    key = SecureKey(32, ring) if in_ring else securekeys.create_key(32)
    cycle = [key]
    cycle.append(cycle)
for _ in range(5):
    garbage()
logged = Logged(32, ring) if in_ring else Logged(32)
gc.disable()
if in_ring:
    ring.destroy()
else:
    print(securekeys.wipe_all())
print(logged.destroyed)
""".replace("{how == \"KeyRing.destroy\"!r}", repr(how == "KeyRing.destroy")))
    assert result.returncode == 0, result
    assert result.stdout.split()[-1] == b"True", result


@pytest.mark.parametrize("op", [operator.lt, operator.le, operator.gt, operator.ge])
def test_secure_buffers_have_no_order(op: Callable[[object, object], object]) -> None:
    # `key >= guess` answered by bytearray's own comparison leaked the key byte by byte.
    key = SecureBuffer(8)
    for other in (bytearray(8), b"x" * 8, SecureBuffer(8)):
        with pytest.raises(TypeError, match="no order"):
            op(key, other)


def test_a_fork_by_raw_system_call_still_makes_parent_keys_fatal() -> None:
    # No pthread_atfork handler runs for syscall(SYS_fork): the wiped-on-fork
    # marker page catches it at the child's next use of the library.
    result = run_python("""
import ctypes, os, platform
import securekeys
from securekeys import crypto
key = securekeys.create_key(32)
number = {"x86_64": 57}.get(platform.machine())
if number is None:
    print("SKIP"); raise SystemExit
pid = ctypes.CDLL(None, use_errno=True).syscall(number)
if pid == 0:
    crypto.mac(key, b"m")
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(status)
""")
    assert result.returncode == 0, result
    if result.stdout.strip() == b"SKIP":
        pytest.skip("no raw fork number for this machine")
    status = int(result.stdout.split()[-1])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT
    assert b"destroyed by fork()" in result.stderr


def test_no_unicode_line_separator_splits_the_fatal_line() -> None:
    result = run_python("""
from securekeys import SecureBuffer
Evil = type("Evil\\u2028securekeys: fatal: forged\\u0085line\\u2029", (SecureBuffer,), {})
buf = Evil(8)
buf.noaccess()
memoryview(buf)
""")
    assert result.returncode == -signal.SIGABRT
    assert len(result.stderr.decode("utf-8").splitlines()) == 1, result.stderr
    assert result.stderr.isascii()


def test_a_background_job_on_a_tostop_terminal_still_aborts() -> None:
    # With `stty tostop`, a background job writing to its terminal gets
    # SIGTTOU, which stops it: the fatal path must never stop half-way.
    import pty
    import termios
    import time
    child_code = textwrap.dedent("""
        import time, securekeys
        key = securekeys.create_key(32)
        time.sleep(0.3)
        key.destroy()
        key.readonly()
    """)
    pid, master = pty.fork()
    if pid == 0:   # a session leader whose controlling terminal is the pty
        try:
            attrs = termios.tcgetattr(0)
            attrs[3] |= termios.TOSTOP
            termios.tcsetattr(0, termios.TCSANOW, attrs)
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            victim = os.fork()
            if victim == 0:
                os.setpgid(0, 0)            # a background process group
                signal.signal(signal.SIGTTOU, signal.SIG_DFL)
                os.execv(sys.executable, [sys.executable, "-c", child_code])
            deadline = time.monotonic() + 20
            while True:
                done, status = os.waitpid(victim, os.WNOHANG | os.WUNTRACED)
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if done and os.WIFSTOPPED(status):
                os.kill(victim, signal.SIGKILL)
                os._exit(3)
            os._exit(0 if done and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT else 4)
        except BaseException:
            os._exit(5)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, output)
    assert b"securekeys: fatal: readonly() on a destroyed SecureKey" in output


@pytest.mark.parametrize("how", ["securekeys._memory._fatal = lambda *a: None",
                                 "securekeys._memory._fatal = print",
                                 "del securekeys._memory._fatal"])
@pytest.mark.parametrize("misuse", ["k.readonly()",          # a check built on a formatted message
                                    "b = SecureBuffer(8); b.noaccess(); memoryview(b)",
                                    "securekeys.crypto.mac(k, b'm')"])
def test_replacing_the_fatal_function_from_python_changes_nothing(how: str, misuse: str) -> None:
    # The library's checks call the C function behind _fatal, never the
    # module attribute: what Python puts there cannot turn misuse into a no-op.
    stderr = assert_dies(f"""
import securekeys, securekeys._memory, securekeys.crypto
from securekeys import SecureBuffer, create_key
k = create_key(32)
k.destroy()
{how}
{misuse}
print("REACHED")
""", signal.SIGABRT)
    assert stderr.count(b"\n") == 1, stderr


def test_the_fatal_function_dies_even_when_its_reason_cannot_be_written() -> None:
    # Asked to die, it dies: a reason it cannot encode is no way out.
    assert_dies("""
import securekeys._memory
securekeys._memory._fatal(None)
print("REACHED")
""", signal.SIGABRT, "could not be written")


RAW_FORK_CHILD = """
import ctypes, os, platform, sys
import securekeys
from securekeys import _memory, create_key
try:
    _memory.set_backend({backend!r})
except OSError:
    print("SKIP no secretmem"); raise SystemExit
number = {{"x86_64": 57}}.get(platform.machine())
if number is None:
    print("SKIP no raw fork number"); raise SystemExit
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
PAGE = os.sysconf("SC_PAGESIZE")
SIZE = 1 << 20
key = create_key(SIZE)
stale = key.reading().__enter__()       # exported before the fork, never released
first = key._data_address() & ~(PAGE - 1)
last = key._data_address() + SIZE
def unmapped_pages():
    spans = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            spans.append((lo, hi))
    return [p for p in range(first, last, PAGE) if not any(lo <= p < hi for lo, hi in spans)]
pid = libc.syscall(number)
if pid == 0:
    # No code of the library has run in this child yet.
    print("zeros before the library is entered:", {backend!r} == "sodium" and bytes(stale[:64]) == bytes(64),
          flush=True)
    # Something the interpreter maps first may take part of a hole.
    if {backend!r} == "secretmem":
        taken = libc.mmap(first, PAGE, 3, 0x22 | 0x100000, -1, 0)   # PRIVATE|ANONYMOUS|FIXED_NOREPLACE
        print("took the first page:", taken == first, flush=True)
    if {enter!r}:
        _memory._allocator_stats()           # the library is entered: the fork is settled
        print("holes left:", len(unmapped_pages()), flush=True)
    stale[SIZE // 2]                         # a page the child did not map
    print("READ", flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("status", status)
"""


@pytest.mark.parametrize("enter", [True, False], ids=["library entered", "stale view first"])
@pytest.mark.parametrize("backend", ["sodium", "secretmem"])
def test_a_raw_fork_child_cannot_reach_memory_through_a_stale_view(backend: str, enter: bool) -> None:
    # A raw fork runs no handler.  Anonymous chunks read zeros in the child;
    # a secretmem chunk is a hole there.  Once the library is entered, every
    # page of the parent's range that the child has not mapped itself is
    # reserved PROT_NONE (so the child's own keys can never land under the
    # stale view), and touching the stale view dies, naming fork().  Touched
    # before the library is entered, a secretmem view faults on the hole
    # (naming fork() too) and an anonymous one reads zeros.
    result = run_python(RAW_FORK_CHILD.format(backend=backend, enter=enter))
    assert result.returncode == 0, result
    out = result.stdout.decode()
    if out.startswith("SKIP"):
        pytest.skip(out)
    status = int(out.split()[-1])
    assert ("READ" in out) == (not enter and backend == "sodium"), out
    assert f"zeros before the library is entered: {backend == 'sodium'}" in out
    if backend == "secretmem":
        assert "took the first page: True" in out
    if not enter and backend == "sodium":
        # Zero pages, readable as they were: reading one leaks nothing, and
        # only the library's next entry seals them.
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
        return
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV, out
    if enter:
        assert "holes left: 0" in out, out
    assert b"securekeys: fatal: SIGSEGV on a key inherited through fork()" in result.stderr, result.stderr


@pytest.mark.parametrize("how", ["securekeys._memory._after_fork_in_child = lambda: None",
                                 "del securekeys._memory._after_fork_in_child"])
def test_replacing_the_fork_settlement_from_python_changes_nothing(how: str) -> None:
    # After a raw fork the parent's anonymous pages read zeros in the child:
    # were the settlement looked up by name, a no-op there would let the child
    # MAC with an all-zero key instead of dying.
    result = run_python(f"""
import ctypes, os, platform
import securekeys, securekeys._memory
from securekeys import crypto
key = securekeys.create_key(32)
{how}
number = {{"x86_64": 57}}.get(platform.machine())
if number is None:
    print("SKIP"); raise SystemExit
pid = ctypes.CDLL(None, use_errno=True).syscall(number)
if pid == 0:
    crypto.mac(key, b"m")
    print("REACHED", flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(status)
""")
    assert result.returncode == 0, result
    if result.stdout.strip() == b"SKIP":
        pytest.skip("no raw fork number for this machine")
    assert b"REACHED" not in result.stdout, result
    status = int(result.stdout.split()[-1])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT
    assert b"destroyed by fork()" in result.stderr
