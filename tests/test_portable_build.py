"""The portable build (SECUREKEYS_PORTABLE=1): the C an architecture without
code of its own here gets, built and run on x86-64.

setup.py then defines SECUREKEYS_PORTABLE, and _wipe.pxd compiles no
inline assembly: after a crypto call the stack is zeroed as before, the
caller-saved registers are not.  That is the path an aarch64 build takes
today, so it is built once per module from a copy of the sources (the test
venv's Cython and compiler, no build isolation: the isolated build is
`make wheel`'s business) and checked: no register wipe compiled in, the
package imports from the copy, the crypto round trips hold, and the stack
scan of tests/test_crypto_stack.py finds nothing for the operations whose
secrets only their dead frames held.

The documented limit (README, "Supported platforms"): without the register
wipe, a secret a stale register spills later is not covered.  On x86-64 the
scan then finds derive_key's master key and aead_decrypt's plaintext
(spilled above the zeroed area), so those cases are not asserted here;
tests/test_crypto_stack.py asserts them for the default build.

Also here, the other two things that differ between platforms: huge slots
follow the kernel's huge page size (faked in a mount namespace: 2 MiB as on
x86-64, 32 and 512 MiB as on 16 and 64 KiB-page aarch64), and no extension
module claims to run without the GIL (the Cython directive
freethreading_compatible is not set; docs/free-threading.md says why not yet).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, isolated_env, run_python
from test_crypto_stack import CASES, FOOTER, SCAN, leaked
from test_packaging import _source_copy

# Instructions only the x86-64 register wipe emits (vzeroall: ymm0-15;
# vpxord on zmm: AVX-512's zmm16-31); libsodium's own code is in
# libsodium.so, not in these modules.
REGISTER_WIPE = re.compile(r"\bvzeroall\b|\bvpxord\s+%zmm")


@pytest.fixture(scope="module")
def portable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the sources with the extensions built in place, portably."""
    src = _source_copy(tmp_path_factory.mktemp("portable"))
    env = {**isolated_env(), "SECUREKEYS_PORTABLE": "1"}
    # --parallel: the three modules compile at once (about half the time).
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace",
                           "--parallel", str(min(os.cpu_count() or 1, 3))],
                          cwd=src, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"the portable build failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return src


def _run(src: Path, code: str) -> subprocess.CompletedProcess[bytes]:
    # PYTHONPATH puts the copy ahead of the test venv's editable install
    # (whose finder comes after the path finder), and the child checks it.
    check = (f"import securekeys\n"
             f"assert securekeys.__file__.startswith({str(src)!r}), securekeys.__file__\n")
    return run_python(check + textwrap.dedent(code), env={**isolated_env(), "PYTHONPATH": str(src)},
                      cwd=str(src))


def _extensions(directory: Path) -> list[Path]:
    found = sorted(directory.glob("*.so"))
    assert {p.name.split(".")[0] for p in found} == {"_memory", "crypto", "terminal"}, found
    return found


def _has_register_wipe(module: Path) -> bool:
    dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(module)], capture_output=True,
                          text=True, timeout=120, check=True).stdout
    return REGISTER_WIPE.search(dump) is not None


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_portable_build_compiles_no_register_wipe(portable: Path) -> None:
    import securekeys.crypto
    # The control: the default build (the one this session imports) has it,
    # so its absence below is the macro's doing, not the pattern's blindness.
    if os.uname().machine == "x86_64":
        assert _has_register_wipe(Path(securekeys.crypto.__file__))
    assert [m.name for m in _extensions(portable / "securekeys") if _has_register_wipe(m)] == []


def test_portable_build_round_trips(portable: Path) -> None:
    result = _run(portable, """
        import os, tempfile
        from securekeys import KeyRing, Protection, SecureBuffer, create_key, read_key, write_key
        from securekeys import crypto

        def raw(buf):
            with buf.reading() as view:
                return bytes(view)

        key = create_key(32)
        nonce = os.urandom(24)
        box = crypto.aead_encrypt(key, b"a message", nonce, b"aad")
        assert raw(crypto.aead_decrypt(key, box, nonce, b"aad")) == b"a message"
        assert raw(crypto.decrypt(key, crypto.encrypt(key, b"again"))) == b"again"
        assert crypto.mac_verify(key, b"m", crypto.mac(key, b"m"))
        assert raw(crypto.derive_key(key, 1, b"context!")) == raw(crypto.derive_key(key, 1, b"context!"))
        pair = crypto.signing_keypair()
        assert crypto.verify(pair.public, b"m", crypto.sign(pair.secret, b"m"))
        box_pair = crypto.box_keypair()
        assert raw(crypto.box_seal_open(box_pair, crypto.box_seal(box_pair.public, b"sealed"))) == b"sealed"
        with crypto.StreamEncryptor(key) as enc:
            sealed = enc.push(b"streamed", final=True)
        with crypto.StreamDecryptor(key, enc.header) as dec:
            plain, final = dec.pull(sealed)
        assert raw(plain) == b"streamed" and final
        stretched = crypto.password_key(create_key(16), os.urandom(16), opslimit=crypto.OPSLIMIT_MIN,
                                        memlimit=crypto.MEMLIMIT_MIN)
        assert len(raw(stretched)) == 32

        # The memory core and the file path (openat2, O_TMPFILE) are portable C:
        # the same build serves them.
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o700)
            path = os.path.join(tmp, "k")
            write_key(path, key)
            assert raw(read_key(path, 32)) == raw(key)
        ring = KeyRing(16)
        ring.create_key().destroy()
        ring.destroy()
        key.noaccess()
        assert key.state is Protection.NOACCESS, key.state
        key.destroy()
        print("OK")
    """)
    assert result.returncode == 0 and result.stdout.strip() == b"OK", result


# Operations whose secrets are left only in dead stack frames: the stack
# wipe alone must leave the scan clean.  password_key: Argon2's final hash
# (16 KiB wiped); sign: Ed25519's nonce and scalar; aead_encrypt without the
# GIL: the key and the keystream.
@pytest.mark.parametrize("case, size", [("password_key", 0), ("sign", 64), ("aead_encrypt", 4096)],
                         ids=["password_key", "sign-64", "aead_encrypt-4096"])
def test_portable_build_still_wipes_the_stack(portable: Path, case: str, size: int) -> None:
    code = SCAN + CASES[case].replace("SIZE", str(size)) + FOOTER
    assert leaked(_run(portable, code)) == "LEAKED []"


def _module_gil_slot(generated_c: str) -> str:
    """What the module's Py_mod_gil slot says when the C compiler is given no
    CYTHON_FREETHREADING_COMPATIBLE of its own: the outer #else of Cython's
    block, which the directive turns from Py_MOD_GIL_USED to _NOT_USED."""
    block = re.search(r"#ifdef CYTHON_FREETHREADING_COMPATIBLE\n(.*?)\n#endif\n", generated_c, re.S)
    assert block is not None, "Cython no longer writes the Py_mod_gil block this test reads"
    outer_else = block.group(1).rsplit("#else\n", 1)[1]
    found = re.fullmatch(r"#define __Pyx_FREETHREADING_COMPATIBLE (\w+)", outer_else.strip())
    assert found is not None, outer_else
    return found.group(1)


def test_no_module_claims_to_run_without_the_gil(portable: Path) -> None:
    # Free-threaded CPython would keep the GIL off for a module declaring
    # Py_MOD_GIL_NOT_USED; securekeys' bookkeeping relies on the GIL today
    # (docs/free-threading.md), so each module must make the interpreter
    # turn the GIL back on.
    for pyx in sorted((REPO / "securekeys").glob("*.pyx")):
        head = pyx.read_text(encoding="utf-8").split("\n", 1)[0]
        assert "freethreading_compatible" not in head, pyx
    assert "freethreading_compatible" not in (REPO / "setup.py").read_text(encoding="utf-8")
    for generated in sorted((portable / "securekeys").glob("*.c")):
        assert _module_gil_slot(generated.read_text(encoding="utf-8")) == "Py_MOD_GIL_USED", generated


# -- the huge page size comes from the kernel ----------------------------------------------

def _with_pmd_size(tmp_path: Path, size: int, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` with the default build in a private mount namespace where
    the kernel's hpage_pmd_size reads `size`: a 64 KiB-page aarch64 kernel
    says 536870912."""
    fake = tmp_path / "hpage_pmd_size"
    fake.write_text(f"{size}\n", encoding="ascii")
    script = f"mount --bind {fake} {PMD_SIZE} && exec \"$0\" \"$@\""
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0 and ("Operation not permitted" in proc.stderr
                                 or "permission denied" in proc.stderr):
        pytest.skip(f"no mount namespace here: {proc.stderr.strip()}")
    return proc


PMD_SIZE = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"
# A 1 MiB secret: huge-slot sized (256 pages of 4 KiB).  What its slot
# adds to the locked bytes says whether it was rounded up to a huge page.
LARGE_SECRET = """
import os
from securekeys import _memory
from securekeys import SecureBuffer
before = _memory._allocator_stats()["locked_bytes"]
buf = SecureBuffer(1 << 20)
buf.readinto(os.open("/dev/zero", os.O_RDONLY))
r = _memory._allocator_stats()
print(r["locked_bytes"] - before, r["huge_page_slots"])
"""


@pytest.mark.skipif(shutil.which("unshare") is None or not Path(PMD_SIZE).is_file(),
                    reason="needs unshare(1) and transparent huge pages")
@pytest.mark.skipif(os.sysconf("SC_PAGESIZE") != 4096, reason="the sizes below are for 4 KiB pages")
@pytest.mark.parametrize("pmd, rounded", [(2 << 20, True), (512 << 20, False), (32 << 20, False)],
                         ids=["2MiB-x86-64", "512MiB-64KiB-pages", "32MiB-16KiB-pages"])
def test_huge_slots_follow_the_kernels_huge_page(tmp_path: Path, pmd: int, rounded: bool) -> None:
    import securekeys
    if securekeys.get_backend() != "sodium":
        pytest.skip("secretmem has no huge pages")
    proc = _with_pmd_size(tmp_path, pmd, LARGE_SECRET)
    assert proc.returncode == 0, proc.stderr
    locked, huge = (int(x) for x in proc.stdout.split())
    if locked == 0:
        pytest.skip("RLIMIT_MEMLOCK too small to lock a 1 MiB secret here")
    # The chunk is locked whole: the slot and its two guard pages.  Rounded:
    # the slot is one 2 MiB huge page.  Not: the secret's own pages (its
    # canary takes one more), never 32 or 512 MiB locked for 1 MiB.
    guards = 2 * 4096
    assert (locked, huge) == ((2 << 20) + guards, 1) if rounded else ((1 << 20) + 4096 + guards, 0)
