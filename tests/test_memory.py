"""SecureBuffer / SecureKey: guarded memory with protection as state."""

from __future__ import annotations

import copy
import ctypes
import gc
import os
import pickle
import signal
import threading

import pytest

import securekeys
from securekeys import Protection, SecureBuffer, SecureKey, create_key, destroy_key
from securekeys._memory import live_buffers
from securekeys.diagnostics import page_report

from conftest import assert_dies, run_python


class PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


def request_writable(obj: object) -> None:
    """Ask for a writable buffer exactly as C code does (PyBUF_WRITABLE)."""
    view = PyBuffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(obj), ctypes.byref(view), 1)
    ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


def mapping_count() -> int:
    with open("/proc/self/maps", encoding="ascii") as maps:
        return sum(1 for _ in maps)


# -- construction -------------------------------------------------------------

@pytest.mark.parametrize("size", [True, False, 1.0, "32", None, b"x", 2**200 + 0j])
def test_size_must_be_an_int(size: object) -> None:
    with pytest.raises(TypeError, match="size must be an int"):
        SecureBuffer(size)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        create_key(size)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, -(2**70)])
def test_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        SecureBuffer(size)


def test_absurd_size_is_an_error_not_a_crash() -> None:
    with pytest.raises(ValueError):
        SecureBuffer(2**70)
    with pytest.raises(MemoryError):
        SecureBuffer(2**60)


def test_new_buffer_is_zero_filled_readwrite_and_locked() -> None:
    buf = SecureBuffer(100)
    assert buf.size == len(buf) == 100
    assert buf.state is Protection.READWRITE
    assert not buf.destroyed
    assert buf.locked  # RLIMIT_MEMLOCK is ample here (and we are root)
    assert bytes(memoryview(buf)) == bytes(100)


def test_protection_enum_members() -> None:
    assert [p.name for p in Protection] == ["NOACCESS", "READONLY", "READWRITE", "DESTROYED"]


# -- the pages as the kernel sees them ----------------------------------------

def test_pages_are_locked_not_dumpable_and_follow_the_state() -> None:
    buf = SecureBuffer(64)
    report = page_report(buf)
    assert report.mlocked and report.locked_kb >= 4
    assert not report.dumpable
    assert report.permissions.startswith("rw")
    buf.readonly()
    assert page_report(buf).permissions.startswith("r-")
    buf.noaccess()
    assert page_report(buf).permissions.startswith("--")
    buf.readwrite()
    assert page_report(buf).permissions.startswith("rw")
    view = memoryview(buf)
    buf.destroy()                    # a view can still reach it: PROT_NONE
    assert page_report(buf).permissions.startswith("--")
    view.release()


def test_data_ends_exactly_at_the_trailing_guard_page() -> None:
    for size in (1, 31, 32, 4095, 4096, 4097, 100_000):
        buf = SecureBuffer(size)
        report = page_report(buf)
        assert buf._data_address() + size == report.end
        # The page after the data is a guard: no access at all.
        with open("/proc/self/maps", encoding="ascii") as maps:
            after = [line for line in maps if line.startswith(f"{report.end:x}-")]
        assert after and after[0].split()[1].startswith("---")


def test_create_key_is_random_readonly_and_locked() -> None:
    a, b = create_key(32), create_key(32)
    assert isinstance(a, SecureKey) and isinstance(a, SecureBuffer)
    assert a.state is Protection.READONLY
    assert a.locked and not page_report(a).writable
    assert a != b
    with a.reading() as view:
        assert len(view) == 32 and view.readonly
        assert bytes(view) != bytes(32)


# -- states and exports -------------------------------------------------------

def test_memoryview_follows_the_state() -> None:
    buf = SecureBuffer(8)
    view = memoryview(buf)
    assert not view.readonly
    view[0] = 0x41
    buf.readonly()
    ro = memoryview(buf)
    assert ro.readonly and ro[0] == 0x41
    with pytest.raises(TypeError):
        ro[0] = 1
    with pytest.raises(BufferError, match="READONLY"):
        request_writable(buf)
    buf.readwrite()
    request_writable(buf)


def test_key_never_exports_a_writable_view() -> None:
    key = SecureKey(8)
    assert key.state is Protection.READWRITE   # only so it can be filled
    assert memoryview(key).readonly
    with pytest.raises(BufferError):
        request_writable(key)


def test_state_changes_and_repr() -> None:
    buf = SecureBuffer(16)
    buf.noaccess()
    assert buf.state is Protection.NOACCESS
    assert repr(buf) == "<SecureBuffer size=16 state=NOACCESS locked=True>"
    buf.readonly()
    assert buf.state is Protection.READONLY
    buf.readwrite()
    assert buf.state is Protection.READWRITE
    buf.destroy()
    assert buf.destroyed and buf.state is Protection.DESTROYED
    buf.destroy()   # idempotent
    assert repr(buf) == "<SecureBuffer size=16 state=DESTROYED locked=True>"


def test_repr_never_shows_content() -> None:
    buf = SecureBuffer(4)
    with buf.writing() as view:
        view[:] = b"\x13\x37\x13\x37"
    for text in (repr(buf), str(buf)):
        assert "1337" not in text and "\\x13" not in text


def test_borrows_raise_and_restore_protection() -> None:
    buf = SecureBuffer(16)
    buf.noaccess()
    with buf.reading() as view:
        assert buf.state is Protection.READONLY and view.readonly
        with buf.reading() as inner:
            assert inner.readonly
        assert buf.state is Protection.READONLY   # the outer borrow is still active
        with buf.writing() as writable:
            assert buf.state is Protection.READWRITE
            writable[0] = 7
        assert buf.state is Protection.READONLY
        assert view[0] == 7
    assert buf.state is Protection.NOACCESS
    with pytest.raises(ValueError):   # the view was released on exit
        view[0]


def test_borrow_released_when_the_block_raises() -> None:
    buf = SecureBuffer(4)
    buf.noaccess()
    with pytest.raises(RuntimeError):
        with buf.reading():
            raise RuntimeError("boom")
    assert buf.state is Protection.NOACCESS


def test_state_change_during_a_borrow_applies_when_it_ends() -> None:
    buf = SecureBuffer(4)
    buf.readonly()
    with buf.reading():
        buf.noaccess()   # the borrow keeps the pages readable for its block
        assert buf.state is Protection.READONLY
    assert buf.state is Protection.NOACCESS


def test_threads_borrow_the_same_key_concurrently() -> None:
    key = create_key(32)
    key.noaccess()
    with key.reading() as view:
        expected = bytes(view)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(2000):
                with key.reading() as v:
                    if bytes(v) != expected:
                        raise AssertionError("wrong bytes")
        except BaseException as error:   # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert key.state is Protection.NOACCESS


# -- equality, hashing, copying -----------------------------------------------

def test_equality_is_by_content_and_needs_no_access() -> None:
    a, b = SecureBuffer(8), SecureBuffer(8)
    assert a == b
    with b.writing() as v:
        v[7] = 1
    a.noaccess()
    b.noaccess()
    assert a != b
    assert a.state is b.state is Protection.NOACCESS
    assert SecureBuffer(8) != SecureBuffer(9)


@pytest.mark.parametrize("other", [b"\x00" * 8, bytearray(8), memoryview(bytes(8)), "x" * 8, None, 0])
def test_comparing_with_anything_but_a_secure_buffer_is_a_type_error(other: object) -> None:
    # An answer would come from an ordinary early-exit comparison, or be a
    # silent False for bytes: both mislead.  The message names the right tool.
    key = SecureBuffer(8)
    with pytest.raises(TypeError, match="compare_digest"):
        key == other   # noqa: B015
    with pytest.raises(TypeError, match="compare_digest"):
        key != other   # noqa: B015
    assert key.state is Protection.READWRITE


def test_not_hashable_picklable_or_copyable() -> None:
    key = create_key(16)
    with pytest.raises(TypeError):
        hash(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.copy(key)
    with pytest.raises(TypeError):
        copy.deepcopy({"k": key})


def test_context_manager_destroys() -> None:
    with SecureBuffer(8) as buf:
        assert not buf.destroyed
    assert buf.destroyed


# -- readinto -----------------------------------------------------------------

def test_readinto_fills_from_a_pipe_across_short_reads() -> None:
    r, w = os.pipe()
    buf = SecureBuffer(10)

    def feed() -> None:
        for chunk in (b"abc", b"defg", b"hij"):
            os.write(w, chunk)
        os.close(w)

    t = threading.Thread(target=feed)
    t.start()
    assert buf.readinto(r) == 10
    t.join()
    os.close(r)
    assert bytes(memoryview(buf)) == b"abcdefghij"


def test_readinto_stops_at_eof_and_accepts_fileno_objects(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"xyz")
    buf = SecureBuffer(8)
    with open(path, "rb", buffering=0) as f:
        assert buf.readinto(f) == 3
    assert bytes(memoryview(buf)) == b"xyz" + bytes(5)


def test_readinto_bad_fd() -> None:
    buf = SecureBuffer(4)
    with pytest.raises(TypeError):
        buf.readinto(True)
    with pytest.raises(TypeError):
        buf.readinto("3")
    with pytest.raises(OSError):
        buf.readinto(987654)


# -- destroy_key --------------------------------------------------------------

def test_destroy_key_on_buffers_and_pairs() -> None:
    key = create_key(32)
    destroy_key(key)
    assert key.destroyed
    pair = {"public": b"public bytes", "secret_key": create_key(64), "other": create_key(8)}
    destroy_key(pair)
    assert pair["secret_key"].destroyed and not pair["other"].destroyed

    class Pair:
        def __init__(self) -> None:
            self.private = create_key(32)
            self.identity_key = SecureBuffer(4)

    obj = Pair()
    destroy_key(obj)
    assert obj.private.destroyed and obj.identity_key.destroyed


@pytest.mark.parametrize("thing", [b"key", bytearray(b"key"), None, "key", 42, {"public": b"x"}, object()])
def test_destroy_key_rejects_everything_else(thing: object) -> None:
    with pytest.raises(TypeError):
        destroy_key(thing)


# -- lifetime -----------------------------------------------------------------

def test_no_mapping_or_buffer_leak_over_many_cycles() -> None:
    gc.collect()
    before_maps, before_live = mapping_count(), live_buffers()
    for _ in range(20_000):
        key = create_key(32)
        key.destroy()
    del key
    for _ in range(5_000):
        SecureBuffer(64)   # freed by refcount, never destroyed explicitly
    gc.collect()
    assert live_buffers() == before_live
    assert mapping_count() <= before_maps + 4


def test_memory_is_wiped_on_destroy_without_freeing_it() -> None:
    buf = SecureBuffer(32)
    with buf.writing() as view:
        view[:] = b"\xaa" * 32
    buf.destroy()
    # Nothing can reach it any more, so its slot stays writable (and is never
    # handed out while the object lives): look at the bytes directly, in C.
    # Zero bytes means it was wiped.
    import ctypes
    assert page_report(buf).permissions.startswith("rw")
    assert ctypes.string_at(buf._data_address() - 16, 48) == bytes(48)


def test_import_calls_sodium_init_and_reports_version() -> None:
    assert securekeys.libsodium_version().count(".") == 2
    result = run_python("import securekeys; print(securekeys.create_key(32).locked)")
    assert result.returncode == 0 and result.stdout.strip() == b"True"


# -- misuse is fatal (each in a fresh interpreter) -----------------------------

SETUP = "import securekeys, ctypes\nfrom securekeys import *\n"

FATAL_CASES = {
    "view of NOACCESS": ("b = SecureBuffer(8); b.noaccess(); memoryview(b)", ["NOACCESS"]),
    "view of destroyed": ("b = SecureBuffer(8); b.destroy(); memoryview(b)", ["destroyed"]),
    "readonly() destroyed": ("k = create_key(8); k.destroy(); k.readonly()", ["destroyed", "readonly()"]),
    "readwrite() destroyed": ("b = SecureBuffer(8); b.destroy(); b.readwrite()", ["destroyed"]),
    "noaccess() destroyed": ("b = SecureBuffer(8); b.destroy(); b.noaccess()", ["destroyed"]),
    "readinto() destroyed": ("b = SecureBuffer(8); b.destroy(); b.readinto(0)", ["destroyed", "readinto()"]),
    "reading() destroyed": ("b = SecureBuffer(8); b.destroy(); b.reading()", ["destroyed", "reading()"]),
    "writing() destroyed": ("b = SecureBuffer(8); b.destroy(); b.writing()", ["destroyed"]),
    "readwrite() on a key": ("k = create_key(8); k.readwrite()", ["SecureKey"]),
    "writing() on a key": ("k = create_key(8); k.writing()", ["SecureKey"]),
    "readinto() on a sealed key": ("k = create_key(8); k.readinto(0)", ["READONLY"]),
    "readinto() on NOACCESS": ("b = SecureBuffer(8); b.noaccess(); b.readinto(0)", ["NOACCESS"]),
    "== on destroyed": ("a = create_key(8); b = create_key(8); a.destroy(); a == b", ["destroyed"]),
}


@pytest.mark.parametrize("case", sorted(FATAL_CASES))
def test_misuse_is_fatal(case: str) -> None:
    code, words = FATAL_CASES[case]
    stderr = assert_dies(SETUP + code + "\nprint('REACHED')", signal.SIGABRT, *words)
    assert stderr.count(b"\n") == 1, stderr   # one line


def test_read_one_byte_past_the_end_dies() -> None:
    assert_dies(SETUP + """
b = SecureBuffer(32)
address = b._data_address()
ctypes.string_at(address + 32, 1)
print('REACHED')
""", signal.SIGSEGV)


def test_native_write_to_a_readonly_key_dies() -> None:
    assert_dies(SETUP + """
k = create_key(32)
ctypes.memset(k._data_address(), 0, 1)
print('REACHED')
""", signal.SIGSEGV)


def test_native_read_of_a_noaccess_key_dies() -> None:
    assert_dies(SETUP + """
k = create_key(32)
k.noaccess()
ctypes.string_at(k._data_address(), 1)
print('REACHED')
""", signal.SIGSEGV)


def test_stale_view_after_destroy_dies() -> None:
    assert_dies(SETUP + """
b = SecureBuffer(32)
view = memoryview(b)
b.destroy()
print(view[0])
print('REACHED')
""", signal.SIGSEGV)


def test_stale_view_of_a_key_after_destroy_dies() -> None:
    assert_dies(SETUP + """
k = create_key(32)
with k.reading() as view:
    inner = view[:]          # keeps the export alive past the block
k.destroy()
bytes(inner)
print('REACHED')
""", signal.SIGSEGV)


def test_write_before_the_start_is_caught_when_freed() -> None:
    # An underflow into the canary is found when the buffer is freed.
    assert_dies(SETUP + """
b = SecureBuffer(32)
ctypes.memset(b._data_address() - 1, 0x55, 1)
del b
print('REACHED')
""", signal.SIGABRT, "canary")


def test_fatal_misuse_wipes_the_other_live_keys_first() -> None:
    # A C-level SIGABRT handler in the dying child runs after the fatal path
    # has wiped and is the last code to run: it lifts the protection of the
    # other key's page by hand and reports through stdout whether it is zero.
    result = run_python(SETUP + """
import signal, os
other = create_key(32)
address = other._data_address()
libc = ctypes.CDLL(None)
handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int)
page = address & ~(os.sysconf('SC_PAGESIZE') - 1)
@handler_type
def c_handler(signum):
    libc.mprotect(ctypes.c_void_p(page), os.sysconf('SC_PAGESIZE'), 1)
    data = ctypes.string_at(address, 32)
    os.write(1, b'WIPED' if data == bytes(32) else b'NOT WIPED')
libc.signal(signal.SIGABRT, c_handler)
victim = create_key(8)
victim.destroy()
victim.readonly()
""")
    assert result.returncode == -signal.SIGABRT, result
    assert result.stdout == b"WIPED", result


NONE_CALLS = [
    "_memory._read_key_strict(None, '/nonexistent')",
    "_memory._encode_text(None, 'hex')",
    "_memory._decode_text(None, SecureBuffer(8), 0, 'hex')",
    "_memory._decode_text(SecureKey(32), None, 0, 'hex')",
    "_memory._Borrow(None, False).__enter__()",
    "_memory._Borrow(None, True).__enter__()",
    "crypto._aead_decrypt_key(None, bytes(40), bytes(24), None, SecureKey(24))",
    "crypto._aead_decrypt_key(create_key(32), bytes(40), bytes(24), None, None)",
    "crypto.mac(None, b'm')",
    "crypto.aead_decrypt_into(create_key(32), bytes(40), bytes(24), None)",
]


def test_none_for_a_secure_buffer_argument_is_a_type_error_not_a_crash() -> None:
    # A typed argument without `not None` lets None through to C, which reads
    # its fields: a segfault.  Each call runs in one child, which must live.
    result = run_python("from securekeys import _memory, crypto, SecureBuffer, SecureKey, create_key\n"
                        + "".join(f"try:\n    {call}\nexcept TypeError:\n    print('TypeError')\n"
                                  f"else:\n    print('no error')\n" for call in NONE_CALLS))
    assert result.returncode == 0, result
    assert result.stdout.decode().split("\n")[:-1] == ["TypeError"] * len(NONE_CALLS), result
