"""The cimport contract, compiled the way a downstream project compiles it.

Once per session: take the wheel that `make wheel` built from the sdist (the
session's `distributions` fixture), install it (not editable) into a fresh venv
with Cython, setuptools and pysodium, and build tests/cython_downstream/ there,
outside the source tree, against the installed package only.  Every check then runs in a subprocess of
that venv's python, so a fatal path or a crash is observed, not suffered.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import securekeys
from conftest import (Distributions, install_readme_example, isolated_env, new_venv,
                      run_checked)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DOWNSTREAM = TESTS / "cython_downstream"

# What the wheel must ship whatever else is added later.
BASELINE_PACKAGE_DATA = {
    "securekeys/__init__.pxd",
    "securekeys/_memory.pxd",
    "securekeys/_memory.pyi",
    "securekeys/crypto.pxd",
    "securekeys/crypto.pyi",
    "securekeys/py.typed",
    "securekeys/includes/__init__.pxd",
    "securekeys/includes/sodium.pxd",
}


# -- helpers -------------------------------------------------------------------

def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@dataclass(frozen=True)
class Venv:
    python: Path
    work: Path   # a directory outside the source tree: the cwd of every check

    def run(self, code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), "-c", textwrap.dedent(code)],
                              cwd=cwd or self.work, env=isolated_env(), capture_output=True,
                              text=True, timeout=300, check=False,
                              preexec_fn=_no_core_dumps)

    def check(self, *code: str) -> str:
        """Run the `code` parts after the common imports; they must print 'ok' last."""
        proc = self.run(PRELUDE + "".join(map(textwrap.dedent, code)) + "\nprint('ok')\n")
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert proc.stdout.splitlines()[-1] == "ok", proc.stdout
        return proc.stdout

    def fatal(self, code: str, signum: int = signal.SIGABRT) -> subprocess.CompletedProcess[str]:
        """Run `code`, which must die by `signum` after printing 'before'."""
        proc = self.run(PRELUDE + textwrap.dedent(code))
        assert proc.returncode == -signum, (
            f"expected death by {signal.Signals(signum).name}, got {proc.returncode}\n"
            f"{proc.stdout}\n{proc.stderr}")
        assert "before" in proc.stdout.split(), proc.stdout   # died where meant to
        assert "after" not in proc.stdout.split(), proc.stdout
        return proc


PRELUDE = """\
import os, sys, threading
import pysodium
import securekeys
import sk_downstream as d
from securekeys import Protection, SecureBuffer, SecureKey
"""


def _assert_fatal_message(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert "securekeys: fatal:" in proc.stderr, proc.stderr
    line = proc.stderr[proc.stderr.index("securekeys: fatal:"):].splitlines()[0]
    for word in words:
        assert word in line, line


# -- the session's wheel and venv -----------------------------------------------

@pytest.fixture(scope="session")
def wheel(distributions: Distributions) -> Path:
    """The securekeys wheel built from the sdist, libsodium not bundled."""
    return distributions.wheel


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv with the wheel installed and the downstream module built in it."""
    root = tmp_path_factory.mktemp("securekeys-venv")
    python = new_venv(root / "venv", wheel, "Cython>=3.0", "setuptools>=70.1", "pysodium")
    downstream = root / "downstream"
    shutil.copytree(DOWNSTREAM, downstream, ignore=shutil.ignore_patterns(
        "build", "*.c", "*.so", "*.egg-info", "__pycache__"))
    run_checked([python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "."],
                cwd=downstream)
    work = root / "work"
    work.mkdir()
    return Venv(python, work)


# -- the wheel --------------------------------------------------------------------

# Inline helpers compiled into securekeys' own modules only: not in the wheel.
INTERNAL_DECLARATIONS = {"securekeys/_checks.pxd", "securekeys/_fdio.pxd", "securekeys/_wipe.pxd"}


def _expected_wheel_files() -> tuple[set[str], set[str]]:
    """Package data and compiled-module stems the source tree calls for."""
    data = {"securekeys/py.typed"}
    modules = set()
    for dirpath, dirnames, filenames in os.walk(REPO / "securekeys", followlinks=True):
        dirnames[:] = [n for n in dirnames if n != "__pycache__"]
        rel = Path(dirpath).relative_to(REPO).as_posix()
        for name in filenames:
            if name.endswith((".pxd", ".pyi", ".py")) and f"{rel}/{name}" not in INTERNAL_DECLARATIONS:
                data.add(f"{rel}/{name}")
            elif name.endswith(".pyx"):
                modules.add(f"{rel}/{name[:-len('.pyx')]}")
    return data, modules


def test_wheel_ships_declarations_stubs_and_modules_but_no_sources(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    data, modules = _expected_wheel_files()
    assert BASELINE_PACKAGE_DATA <= data     # the walk really saw the tree
    assert "securekeys/_memory" in modules
    assert sorted(data - names) == []
    for stem in modules:
        assert [n for n in names if re.fullmatch(re.escape(stem) + r"\.[\w.-]+\.so", n)], \
            f"{stem}.pyx is not compiled into the wheel"
    assert sorted(n for n in names if n.endswith((".c", ".pyx", ".pxi"))) == []
    assert sorted(names & INTERNAL_DECLARATIONS) == []


def test_installed_wheel_is_importable(venv: Venv) -> None:
    venv.check("""
        prefix = os.path.realpath(sys.prefix)
        for module in (securekeys, securekeys._memory, d):
            assert os.path.realpath(module.__file__).startswith(prefix), module.__file__
        assert securekeys._memory.__file__.endswith(".so")
        key = securekeys.create_key(32)
        assert len(key) == 32 and key.state is Protection.READONLY
    """)


# -- get_include() -------------------------------------------------------------------

def _pkg_config_dirs() -> list[str]:
    if shutil.which("pkg-config") is None:
        return []
    out = subprocess.run(["pkg-config", "--cflags-only-I", "libsodium"],
                         capture_output=True, text=True, check=False)
    return [f[2:] for f in shlex.split(out.stdout)] if out.returncode == 0 else []


def test_get_include_of_installed_package(venv: Venv) -> None:
    out = venv.check("""
        dirs = securekeys.get_include()
        assert dirs[0] == os.path.dirname(os.path.dirname(securekeys.__file__)), dirs
        for pxd in ("__init__.pxd", "_memory.pxd", "crypto.pxd", "includes/__init__.pxd",
                    "includes/sodium.pxd"):
            assert os.path.isfile(os.path.join(dirs[0], "securekeys", pxd)), pxd
        print(repr(dirs[1:]))
    """)
    assert out.splitlines()[-2] == repr([d for d in _pkg_config_dirs()])


def test_get_include_adds_pkg_config_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed")
    (tmp_path / "libsodium.pc").write_text(
        "prefix=/opt/sodium\nName: libsodium\nDescription: test\nVersion: 1.0.18\n"
        "Cflags: -I${prefix}/include -I/opt/sodium\\ extra/include\nLibs: -lsodium\n")
    monkeypatch.setenv("PKG_CONFIG_LIBDIR", str(tmp_path))
    monkeypatch.setenv("PKG_CONFIG_PATH", str(tmp_path))
    package_parent = str(Path(securekeys.__file__).resolve().parent.parent)
    assert securekeys.get_include() == [package_parent, "/opt/sodium/include",
                                        "/opt/sodium extra/include"]


def test_get_include_without_pkg_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))   # an empty directory: no pkg-config
    dirs = securekeys.get_include()
    assert dirs == [str(Path(securekeys.__file__).resolve().parent.parent)]
    assert (Path(dirs[0]) / "securekeys" / "_memory.pxd").is_file()


# -- the contract, from compiled downstream code ----------------------------------

def test_keyed_hash_without_the_gil_matches_libsodium(venv: Venv) -> None:
    venv.check("""
        key = securekeys.create_key(32)
        key_bytes = bytes(memoryview(key))   # the oracle's copy: test code only
        for message in (b"", b"abc", os.urandom(100_000)):
            expected = pysodium.crypto_generichash(message, k=key_bytes)
            assert d.keyed_hash(key, message) == expected
            assert d.keyed_hash(securekeys.create_key(32), message) != expected
        assert key.state is Protection.READONLY

        path = os.path.join(os.getcwd(), "key-%d" % os.getpid())
        securekeys.write_key(path, key)
        try:
            again = securekeys.read_key(path, 32)
        finally:
            os.unlink(path)
        assert d.keyed_hash(again, b"abc") == pysodium.crypto_generichash(b"abc", k=key_bytes)
        assert d.is_secure_key(again) and not d.is_secure_key(SecureBuffer(1))
        assert not d.is_secure_key(key_bytes)
    """)


def test_wrong_types_are_type_errors(venv: Venv) -> None:
    venv.check("""
        for bad in (None, b"k" * 32, bytearray(32), memoryview(b"k" * 32)):
            try:
                d.keyed_hash(bad, b"m")
            except TypeError:
                pass
            else:
                raise AssertionError(f"keyed_hash accepted {bad!r}")
    """)


def test_read_borrow_of_noaccess_key_restores_noaccess(venv: Venv) -> None:
    venv.check("""
        key = securekeys.create_key(32)
        key_bytes = bytes(memoryview(key))
        key.noaccess()
        assert d.keyed_hash(key, b"abc") == pysodium.crypto_generichash(b"abc", k=key_bytes)
        assert key.state is Protection.NOACCESS
        assert d.protection_while_borrowed(key, False) == d.SK["READONLY"]
        assert d.info(key)[1] == d.SK["NOACCESS"]

        buf = SecureBuffer(32)      # READWRITE stays READWRITE: borrows never lower it
        d.keyed_hash(buf, b"abc")
        assert d.protection_while_borrowed(buf, False) == d.SK["READWRITE"]
        assert buf.state is Protection.READWRITE
    """)


@pytest.mark.parametrize("start", ["readonly", "noaccess", "readwrite"])
def test_write_borrow_of_secure_buffer_writes_and_restores(venv: Venv, start: str) -> None:
    venv.check(f"""
        buf = SecureBuffer(4097)
        buf.{start}()
        d.fill(buf, 0xA5)
        assert buf.state is Protection.{start.upper()}, buf.state
        assert d.protection_while_borrowed(buf, True) == d.SK["READWRITE"]
        assert buf.state is Protection.{start.upper()}, buf.state
        with buf.reading() as view:
            assert view.tobytes() == b"\\xa5" * 4097
    """)


def test_nbytes_and_protection(venv: Venv) -> None:
    venv.check("""
        assert sorted(d.SK) == sorted(p.name for p in Protection)
        assert sorted(d.SK.values()) == [0, 1, 2, 3]
        for size in (1, 32, 4096, 4097):
            buf = SecureBuffer(size)
            seen = [d.info(buf)]
            buf.readonly(); seen.append(d.info(buf))
            buf.noaccess(); seen.append(d.info(buf))
            buf.destroy(); seen.append(d.info(buf))
            assert seen == [(size, d.SK[name]) for name in
                            ("READWRITE", "READONLY", "NOACCESS", "DESTROYED")], seen
            key = securekeys.create_key(size)
            assert d.info(key) == (size, d.SK["READONLY"])
    """)


def test_destroy_of_a_borrowed_key_waits_for_the_release(venv: Venv) -> None:
    venv.check("""
        key = securekeys.create_key(32)
        with key.reading() as view:
            first = view[0]
        during, after, byte = d.destroy_while_borrowed(key)
        assert (during, after, byte) == (d.SK["READONLY"], d.SK["DESTROYED"], first)
        assert key.destroyed and key.state is Protection.DESTROYED
    """)


def test_release_after_wipe_all_raises(venv: Venv) -> None:
    venv.check("""
        key = securekeys.create_key(32)
        try:
            d.wipe_all_while_borrowed(key, False)
        except securekeys.KeyDestroyedError:
            pass
        else:
            raise AssertionError("the release did not say the key was wiped")
        assert key.destroyed and key.state is Protection.DESTROYED
    """)


def test_touching_a_borrowed_pointer_after_wipe_all_crashes(venv: Venv) -> None:
    venv.fatal("""
        key = securekeys.create_key(32)
        print("before", flush=True)
        d.wipe_all_while_borrowed(key, True)
        print("after", flush=True)
    """, signal.SIGSEGV)


def test_read_borrow_of_destroyed_key_is_fatal(venv: Venv) -> None:
    proc = venv.fatal("""
        key = securekeys.create_key(32)
        key.destroy()
        print("before", flush=True)
        d.keyed_hash(key, b"abc")
        print("after", flush=True)
    """)
    _assert_fatal_message(proc, "read borrow", "destroyed", "SecureKey")


def test_write_borrow_of_destroyed_buffer_is_fatal(venv: Venv) -> None:
    proc = venv.fatal("""
        buf = SecureBuffer(32)
        buf.destroy()
        print("before", flush=True)
        d.fill(buf, 1)
        print("after", flush=True)
    """)
    _assert_fatal_message(proc, "write borrow", "destroyed", "SecureBuffer")


@pytest.mark.parametrize("state", ["readonly", "noaccess"])
def test_write_borrow_of_secure_key_is_fatal(venv: Venv, state: str) -> None:
    proc = venv.fatal(f"""
        key = securekeys.create_key(32)
        key.{state}()
        print("before", flush=True)
        d.fill(key, 0)
        print("after", flush=True)
    """)
    _assert_fatal_message(proc, "write borrow", "SecureKey")


def test_fill_ptr_and_seal_make_a_new_key_in_place(venv: Venv) -> None:
    venv.check("""
        master = securekeys.create_key(32)
        master_bytes = bytes(memoryview(master))
        master.noaccess()
        key = d.derive(master, b"label")
        assert isinstance(key, SecureKey) and key.state is Protection.READONLY
        assert master.state is Protection.NOACCESS
        assert bytes(memoryview(key)) == pysodium.crypto_generichash(b"label", k=master_bytes)
    """)


@pytest.mark.parametrize("state", ["readonly", "noaccess"])
def test_fill_ptr_on_a_sealed_key_is_fatal(venv: Venv, state: str) -> None:
    proc = venv.fatal(f"""
        key = securekeys.create_key(32)
        key.{state}()
        print("before", flush=True)
        d.fill_sealed(key)
        print("after", flush=True)
    """)
    _assert_fatal_message(proc, "fill_ptr()", "SecureKey")


def test_release_without_borrow_is_fatal(venv: Venv) -> None:
    proc = venv.fatal("""
        key = securekeys.create_key(32)
        print("before", flush=True)
        d.release_unborrowed(key)
        print("after", flush=True)
    """)
    _assert_fatal_message(proc, "release_read() without a read borrow")


# -- securekeys.crypto's cimport API ------------------------------------------------
#
# The cdef functions of securekeys/crypto.pxd, called from the downstream module
# (d.c_*), against pysodium and the Python API that runs on the same functions.

CRYPTO = """
    from securekeys import crypto
    from securekeys.crypto import DecryptionError

    def raw(buf):
        with buf.reading() as view:
            return view.tobytes()
"""


def test_crypto_cimport_matches_pysodium_and_python_api(venv: Venv) -> None:
    venv.check(CRYPTO, """
        key = securekeys.create_key(32)
        k = raw(key)                         # the oracle's copy: test code only
        key.noaccess()
        for m in (b"", b"abc", os.urandom(100_000)):   # both sides of _NOGIL_MIN
            n, ad = os.urandom(24), os.urandom(len(m) % 40)
            c = d.c_aead_encrypt(key, m, n, ad)
            assert c == pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(m, ad, n, k)
            assert c == crypto.aead_encrypt(key, m, n, ad)
            if m:
                plain = d.c_aead_decrypt(key, c, n, ad)
                assert type(plain) is SecureBuffer and plain.state is Protection.READONLY
                assert raw(plain) == m and plain == crypto.aead_decrypt(key, c, n, ad)
                buf = bytearray(m) + bytearray(16)
                d.c_aead_encrypt_in_place(key, buf, n)
                assert bytes(buf) == crypto.aead_encrypt(key, m, n)
            else:
                try:
                    d.c_aead_decrypt(key, c, n, ad)
                except DecryptionError:
                    raise
                except ValueError as e:
                    assert "nothing to decrypt" in str(e), e
                else:
                    raise AssertionError("empty plaintext decrypted")

            tag = d.c_mac(key, m)
            assert tag == pysodium.crypto_auth(m, k) == crypto.mac(key, m)
            assert d.c_mac_check(key, m, tag) == 1
            assert d.c_mac_check(key, m + b"x", tag) == 0
            assert d.c_mac_check(key, m, bytes(32)) == 0

            for size in (16, 32, 64):
                h = d.c_keyed_hash(key, m, size)
                assert h == pysodium.crypto_generichash(m, k, size)
                assert h == crypto.keyed_hash(key, m, size)
            assert key.state is Protection.NOACCESS

        for sub, size in ((0, 32), (7, 16), (2**64 - 1, 64)):
            sub_key = d.c_derive(key, sub, b"context!", size)
            assert type(sub_key) is SecureKey and sub_key.state is Protection.READONLY
            assert raw(sub_key) == pysodium.crypto_kdf_derive_from_key(size, sub, b"context!", k)
            assert sub_key == crypto.derive_key(key, sub, b"context!", size)
        assert key.state is Protection.NOACCESS

        seed = securekeys.create_key(32)
        pk, sk = pysodium.crypto_sign_seed_keypair(raw(seed))
        pair = crypto.signing_keypair(seed)
        pair.secret.noaccess()
        for m in (b"", b"abc", os.urandom(5000)):
            sig = d.c_sign(pair.secret, m)
            assert sig == pysodium.crypto_sign_detached(m, sk) == crypto.sign(pair.secret, m)
            assert crypto.verify(pk, m, sig)
        assert pair.secret.state is Protection.NOACCESS
    """)


def test_crypto_cimport_forged_ciphertext_leaves_nothing_behind(venv: Venv) -> None:
    venv.check(CRYPTO, """
        import gc
        key, n, ad = securekeys.create_key(32), os.urandom(24), b"header"
        key.noaccess()
        c = d.c_aead_encrypt(key, b"the plaintext", n, ad)
        gc.collect()
        live = securekeys._memory.live_buffers()
        forgeries = [c[:i] + bytes([c[i] ^ 1]) + c[i + 1:] for i in range(len(c))]
        forgeries += [c + b"\\0", c[:-1], c[:15], b""]
        for forged in forgeries:
            try:
                d.c_aead_decrypt(key, forged, n, ad)
            except DecryptionError:
                pass
            else:
                raise AssertionError(f"forgery accepted: {forged!r}")
        for bad_key, bad_n, bad_ad in ((securekeys.create_key(32), n, ad),
                                       (key, os.urandom(24), ad), (key, n, b"")):
            try:
                d.c_aead_decrypt(bad_key, c, bad_n, bad_ad)
            except DecryptionError:
                pass
            else:
                raise AssertionError("wrong key, nonce or AAD accepted")
        gc.collect()
        assert securekeys._memory.live_buffers() == live     # no plaintext left behind
        assert key.state is Protection.NOACCESS
        assert raw(d.c_aead_decrypt(key, c, n, ad)) == b"the plaintext"
    """)


def test_crypto_cimport_bad_arguments_raise(venv: Venv) -> None:
    venv.check(CRYPTO, """
        import gc
        k8, k16, k32, k64 = (securekeys.create_key(n) for n in (8, 16, 32, 64))
        n = bytes(24)
        cases = [
            (TypeError, "key must be a SecureBuffer, not NoneType",
             lambda: d.c_aead_encrypt(None, b"m", n)),
            (TypeError, "key must be a SecureBuffer", lambda: d.c_aead_decrypt(None, bytes(20), n)),
            (TypeError, "key must be a SecureBuffer", lambda: d.c_mac(None, b"m")),
            (TypeError, "key must be a SecureBuffer", lambda: d.c_mac_check(None, b"m", bytes(32))),
            (TypeError, "key must be a SecureBuffer", lambda: d.c_keyed_hash(None, b"m")),
            (TypeError, "master must be a SecureBuffer", lambda: d.c_derive(None, 1, b"context!")),
            (TypeError, "secret must be a SecureBuffer", lambda: d.c_sign(None, b"m")),
            (ValueError, "key must be 32 bytes long, not 16", lambda: d.c_aead_encrypt(k16, b"m", n)),
            (ValueError, "key must be 32 bytes long, not 64", lambda: d.c_aead_decrypt(k64, bytes(20), n)),
            (ValueError, "key must be 32 bytes long, not 16", lambda: d.c_mac(k16, b"m")),
            (ValueError, "key must be 32 bytes long", lambda: d.c_mac_check(k64, b"m", bytes(32))),
            (ValueError, "key must be between 16 and 64 bytes long, not 8",
             lambda: d.c_keyed_hash(k8, b"m")),
            (ValueError, "outlen must be between 16 and 64, not 15", lambda: d.c_keyed_hash(k32, b"m", 15)),
            (ValueError, "outlen must be between 16 and 64, not 65", lambda: d.c_keyed_hash(k32, b"m", 65)),
            (ValueError, "master must be 32 bytes long, not 16", lambda: d.c_derive(k16, 1, b"context!")),
            (ValueError, "size must be between 16 and 64, not 15", lambda: d.c_derive(k32, 1, b"context!", 15)),
            (ValueError, "size must be between 16 and 64, not 65", lambda: d.c_derive(k32, 1, b"context!", 65)),
            (ValueError, "secret must be 64 bytes long, not 32", lambda: d.c_sign(k32, b"m")),
            (ValueError, "m is NULL", lambda: d.c_null_message(k32)),
        ]
        live = securekeys._memory.live_buffers()
        for exc, message, call in cases:
            try:
                call()
            except exc as e:
                assert message in str(e), (message, e)
            else:
                raise AssertionError(f"no {exc.__name__}: {message}")
        gc.collect()
        assert securekeys._memory.live_buffers() == live   # no half-made key kept
    """)


CRYPTO_CIMPORT_CALLS = {
    "aead_encrypt_into": "d.c_aead_encrypt(k32, b'm', bytes(24))",
    "aead_decrypt_from": "d.c_aead_decrypt(k32, bytes(40), bytes(24))",
    "mac_into": "d.c_mac(k32, b'm')",
    "mac_check": "d.c_mac_check(k32, b'm', bytes(32))",
    "keyed_hash_into": "d.c_keyed_hash(k32, b'm')",
    "derive_key_from": "d.c_derive(k32, 1, b'context!')",
    "sign_into": "d.c_sign(k64, b'm')",
}


@pytest.mark.parametrize("name", CRYPTO_CIMPORT_CALLS)
def test_crypto_cimport_destroyed_key_is_fatal(venv: Venv, name: str) -> None:
    proc = venv.fatal(f"""
        k32, k64 = securekeys.create_key(32), securekeys.create_key(64)
        k32.destroy(); k64.destroy()
        print("before", flush=True)
        {CRYPTO_CIMPORT_CALLS[name]}
        print("after", flush=True)
    """)
    _assert_fatal_message(proc, "read borrow", "destroyed")


def test_crypto_cimport_from_many_threads(venv: Venv) -> None:
    # 64 KiB inputs: every call releases the GIL while the key is borrowed,
    # so the borrows of eight threads overlap on one NOACCESS key.
    venv.check(CRYPTO, """
        key = securekeys.create_key(32)
        k = raw(key)
        key.noaccess()
        message, n = os.urandom(1 << 16), os.urandom(24)
        expected = (pysodium.crypto_generichash(message, k, 32),
                    pysodium.crypto_auth(message, k),
                    pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(message, None, n, k))
        errors = []
        barrier = threading.Barrier(8)
        def work():
            barrier.wait()
            try:
                for _ in range(50):
                    got = (d.c_keyed_hash(key, message), d.c_mac(key, message),
                           d.c_aead_encrypt(key, message, n))
                    if got != expected:
                        raise AssertionError("wrong result")
                    if raw(d.c_aead_decrypt(key, expected[2], n)) != message:
                        raise AssertionError("wrong plaintext")
            except BaseException as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, errors
        assert key.state is Protection.NOACCESS, key.state
    """)


# -- threads ----------------------------------------------------------------------
#
# Each call borrows with the GIL, hashes 64 KiB without it and releases: with 8
# threads the borrows overlap (checked with most_borrowed()).  A miscounted
# borrow would put the pages back to NOACCESS under a running hash: SIGSEGV.

THREADS = """
    def run_threads(jobs):
        errors = []
        barrier = threading.Barrier(len(jobs))
        def work(job):
            barrier.wait()
            try:
                for _ in range(300):
                    job()
            except BaseException as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, errors
        assert d.most_borrowed() > 1, d.most_borrowed()

    message = os.urandom(1 << 16)
"""


@pytest.mark.parametrize("start", ["noaccess", "readonly"])
def test_read_borrows_from_many_threads(venv: Venv, start: str) -> None:
    venv.check(THREADS, f"""
        key = securekeys.create_key(32)
        expected = pysodium.crypto_generichash(message, k=bytes(memoryview(key)))
        key.{start}()
        def job():
            if d.keyed_hash(key, message) != expected:
                raise AssertionError("wrong digest")
        run_threads([job] * 8)
        assert key.state is Protection.{start.upper()}, key.state
        assert d.info(key) == (32, d.SK["{start.upper()}"])
    """)


def test_read_and_write_borrows_from_many_threads(venv: Venv) -> None:
    venv.check(THREADS, """
        buf = SecureBuffer(32)
        d.fill(buf, 0x5A)
        buf.noaccess()
        expected = pysodium.crypto_generichash(message, k=b"\\x5a" * 32)
        def reader():
            if d.keyed_hash(buf, message) != expected:
                raise AssertionError("wrong digest")
        def writer():
            d.fill(buf, 0x5A)   # same bytes: the digest stays predictable
        run_threads([reader, writer] * 4)
        assert buf.state is Protection.NOACCESS, buf.state
        with buf.reading() as view:
            assert view.tobytes() == b"\\x5a" * 32
    """)


# -- the README example ---------------------------------------------------------------

def test_readme_example_builds_and_runs(venv: Venv, tmp_path: Path) -> None:
    project = install_readme_example(venv.python, tmp_path)
    proc = venv.run((project / "example.py").read_text(), cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"[0-9a-f]{64} Protection\.NOACCESS\n", proc.stdout), proc.stdout

    venv.check("""
        from keyed_hash import keyed_hash
        key = securekeys.create_key(32)
        key_bytes = bytes(memoryview(key))
        key.noaccess()
        assert keyed_hash(key, b"abc") == pysodium.crypto_generichash(b"abc", k=key_bytes)
        assert key.state is Protection.NOACCESS
    """)
