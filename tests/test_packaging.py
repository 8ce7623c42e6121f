"""The package as users get it: the sdist, the wheel built from it, the
repaired (self-contained) wheel, each installed into a fresh venv that cannot
see the source tree; and the build's own messages on a machine that lacks a
prerequisite.

The distributions come from one `make wheel` per session (conftest's
`distributions` fixture), shared with tests/test_cython.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import securekeys
from conftest import (INSTALLED, PYTHON_TAG, REPO, Distributions, install_readme_example, isolated_env, new_venv,
                      run_checked)

# The top-level files the sdist must carry besides the source folders.
TOP_LEVEL = ["LICENSE", "MANIFEST.in", "Makefile", "README.md", "pyproject.toml", "setup.py"]
SOURCE_FOLDERS = ["securekeys", "include", "tests", "scripts"]


def _project_version() -> str:
    """The version as written in pyproject.toml, the one place it is set."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^version = "([^"]+)"', text, re.M)
    assert found is not None, "no version in pyproject.toml"
    return found.group(1)


# -- the version ---------------------------------------------------------------------

def test_version_comes_from_the_installed_metadata() -> None:
    assert securekeys.__version__ == importlib.metadata.version("securekeys")
    assert securekeys.__version__ == _project_version()


def test_version_of_a_never_installed_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert securekeys._installed_version() == "0+unknown"


# -- the sdist ------------------------------------------------------------------------

def _source_files() -> list[str]:
    """What a clean checkout has (tracked or new, not ignored) that the sdist must carry."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare the sdist with")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                          "--", *TOP_LEVEL, *SOURCE_FOLDERS],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return sorted(name for name in out.splitlines() if (REPO / name).is_file())


def _sdist_files(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    prefix = f"securekeys-{_project_version()}/"
    assert all(n.startswith(prefix) for n in names), names
    return sorted(n[len(prefix):] for n in names)


def test_sdist_carries_every_source_and_nothing_generated(distributions: Distributions) -> None:
    sources = _source_files()
    assert "securekeys/_memory.pyx" in sources and "LICENSE" in sources   # the listing is real
    shipped = _sdist_files(distributions.sdist)
    assert sorted(set(sources) - set(shipped)) == []
    assert [n for n in shipped if n.endswith((".c", ".so", ".o", ".pyc"))] == []
    # Only the source folders, the top-level files and setuptools' own metadata.
    extra = {n.split("/")[0] for n in shipped} - set(TOP_LEVEL) - set(SOURCE_FOLDERS)
    assert extra - {"setup.cfg", "securekeys.egg-info"} == {"PKG-INFO"}, extra


def test_wheel_from_sdist_equals_wheel_from_tree(distributions: Distributions,
                                                 tmp_path: Path) -> None:
    # Without build isolation: `make wheel` has proven the isolated build, and
    # this one only needs the same file list (the test extra holds setuptools
    # and Cython).
    run_checked([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path,
                 REPO])
    (from_tree,) = tmp_path.glob("securekeys-*.whl")
    assert from_tree.name == distributions.wheel.name
    from_sdist = sorted(zipfile.ZipFile(distributions.wheel).namelist())
    assert sorted(zipfile.ZipFile(from_tree).namelist()) == from_sdist
    assert "securekeys.libs" not in {n.split("/")[0] for n in from_sdist}


def test_repaired_wheel_bundles_libsodium_and_libargon2(distributions: Distributions) -> None:
    # `make wheel` leaves one wheel; `make wheels` (under `make matrix`) one per CPython.
    ours = f"*-{PYTHON_TAG}-*.whl" if INSTALLED else "*.whl"
    assert sorted(p.name for p in distributions.dist.glob(ours)) == [distributions.repaired.name]
    assert re.fullmatch(r"securekeys-[\w.]+-cp3\d+-cp3\d+-manylinux_2_\d+_x86_64\.whl",
                        distributions.repaired.name), distributions.repaired.name
    names = zipfile.ZipFile(distributions.repaired).namelist()
    bundled = sorted(n for n in names if n.startswith("securekeys.libs/") and not n.endswith("/"))
    assert len(bundled) == 2, bundled
    assert re.fullmatch(r"securekeys\.libs/libargon2-\w+\.so[.\d]*", bundled[0]), bundled
    assert re.fullmatch(r"securekeys\.libs/libsodium-\w+\.so[.\d]*", bundled[1]), bundled
    # The repaired wheel is the built one plus the library: nothing lost.
    built = {n for n in zipfile.ZipFile(distributions.wheel).namelist()
             if not n.endswith("RECORD")}
    assert sorted(built - set(names)) == []


# -- installed into fresh venvs ----------------------------------------------------------

@dataclass(frozen=True)
class Installed:
    python: Path
    work: Path   # outside the source tree: the cwd of every check

    def run(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), "-c", textwrap.dedent(code), *args],
                              cwd=self.work, env=isolated_env(), capture_output=True,
                              text=True, timeout=300, check=False)


def _install(tmp_path_factory: pytest.TempPathFactory, wheel: Path,
             *more: str) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    python = new_venv(root / "venv", wheel, *more)
    (root / "work").mkdir()
    return Installed(python, root / "work")


@pytest.fixture(scope="session")
def installed_wheel(distributions: Distributions,
                    tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from the sdist, alone in a fresh venv."""
    return _install(tmp_path_factory, distributions.wheel)


@pytest.fixture(scope="session")
def installed_repaired(distributions: Distributions,
                       tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The repaired wheel in a fresh venv, with what a downstream Cython build needs."""
    return _install(tmp_path_factory, distributions.repaired, "Cython>=3.0", "setuptools>=70.1")


SMOKE = """
    import os, sys
    repo = os.path.realpath(sys.argv[1])
    for entry in sys.path:
        where = os.path.realpath(entry or os.getcwd())
        assert not (where + os.sep).startswith(repo + os.sep), f"source tree on sys.path: {entry}"

    import importlib.metadata
    import securekeys
    from securekeys.crypto import aead_decrypt, aead_encrypt
    prefix = os.path.realpath(sys.prefix)
    for module in (securekeys, securekeys._memory, securekeys.crypto):
        assert os.path.realpath(module.__file__).startswith(prefix + os.sep), module.__file__

    key = securekeys.create_key(32)
    securekeys.write_key("smoke.key", key)
    again = securekeys.read_key("smoke.key", 32)
    assert again == key and again.state is securekeys.Protection.READONLY
    nonce = os.urandom(24)
    box = aead_encrypt(again, b"attack at dawn", nonce)
    with aead_decrypt(key, box, nonce).reading() as plain:
        assert plain.tobytes() == b"attack at dawn"
    securekeys.destroy_key(again); securekeys.destroy_key(key)

    assert securekeys.__version__ == importlib.metadata.version("securekeys")
    print(securekeys.__version__)
    print(securekeys.libsodium_version())
"""


@pytest.mark.parametrize("which", ["installed_wheel", "installed_repaired"])
def test_installed_package_works_without_the_source_tree(
        which: str, request: pytest.FixtureRequest) -> None:
    installed: Installed = request.getfixturevalue(which)
    proc = installed.run(SMOKE, str(REPO))
    assert proc.returncode == 0, proc.stderr
    version, sodium = proc.stdout.split()
    assert version == _project_version()

    cli = subprocess.run([str(installed.python.parent / "securekeys"), "info"],
                         cwd=installed.work, env=isolated_env(), capture_output=True,
                         text=True, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr
    assert f"libsodium version: {sodium}" in cli.stdout.splitlines(), cli.stdout


# securekeys.crypto is the extension that links libargon2 (password_key).
MAPPED_LIBRARY = """
    import json, os, sys
    import securekeys, securekeys.crypto
    mapped = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and sys.argv[1] in os.path.basename(fields[5].strip()):
                mapped.add(fields[5].strip())
    print(json.dumps({"prefix": os.path.realpath(sys.prefix), "mapped": sorted(mapped)}))
"""


def _mapped_library(installed: Installed, library: str) -> tuple[str, list[str]]:
    proc = installed.run(MAPPED_LIBRARY, library)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    return found["prefix"], found["mapped"]


@pytest.mark.parametrize("library", ["libsodium", "libargon2"])
def test_repaired_wheel_loads_its_libraries_from_the_wheel(installed_repaired: Installed,
                                                           library: str) -> None:
    prefix, mapped = _mapped_library(installed_repaired, library)
    assert len(mapped) == 1, mapped     # one copy, no system copy beside it
    assert re.fullmatch(re.escape(prefix) + r"/lib/python3\.\d+/site-packages/"
                        r"securekeys\.libs/" + library + r"-\w+\.so[.\d]*", mapped[0]), mapped


@pytest.mark.parametrize("library", ["libsodium", "libargon2"])
def test_unrepaired_wheel_loads_the_system_libraries(installed_wheel: Installed,
                                                     library: str) -> None:
    # The contrast that shows the check above can tell the two apart.
    prefix, mapped = _mapped_library(installed_wheel, library)
    assert len(mapped) == 1 and not mapped[0].startswith(prefix + os.sep), mapped


def test_downstream_cimport_needs_no_sodium_h(installed_repaired: Installed) -> None:
    """A Cython module that uses securekeys' cimport API but calls no libsodium
    itself builds without sodium.h and without linking libsodium."""
    project = installed_repaired.work / "no-sodium"
    project.mkdir()
    (project / "tagger.pyx").write_text(textwrap.dedent("""\
        # cython: language_level=3
        from securekeys cimport SecureKey
        from securekeys.crypto cimport mac_into

        def tag(SecureKey key not None, bytes message not None):
            cdef unsigned char out[32]
            mac_into(key, out, message, len(message))
            return out[:32]
    """))
    (project / "setup.py").write_text(textwrap.dedent("""\
        import securekeys
        from Cython.Build import cythonize
        from setuptools import setup

        setup(ext_modules=cythonize("tagger.pyx", include_path=securekeys.get_include()))
    """))
    run_checked([installed_repaired.python, "setup.py", "-q", "build_ext", "--inplace"],
                cwd=project)
    generated = (project / "tagger.c").read_text(encoding="utf-8")
    assert "tagger.pyx" in generated and "sodium.h" not in generated
    proc = subprocess.run(
        [str(installed_repaired.python), "-c",
         "import securekeys, securekeys.crypto, tagger\n"
         "key = securekeys.create_key(32)\n"
         "assert tagger.tag(key, b'm') == securekeys.crypto.mac(key, b'm')\n"],
        cwd=project, env=isolated_env(), capture_output=True, text=True, timeout=120,
        check=False)
    assert proc.returncode == 0, proc.stderr


def test_readme_cython_example_with_the_self_contained_wheel(installed_repaired: Installed,
                                                            tmp_path: Path) -> None:
    """The README's example calls libsodium itself: built against the system's
    sodium.h, it runs beside the wheel's private copy of libsodium."""
    project = install_readme_example(installed_repaired.python, tmp_path)
    proc = installed_repaired.run((project / "example.py").read_text())
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"[0-9a-f]{64} Protection\.NOACCESS\n", proc.stdout), proc.stdout


# -- the build's messages ----------------------------------------------------------------

def _source_copy(tmp_path: Path, with_pyx: bool = True) -> Path:
    """setup.py, pyproject.toml and the package sources, without build output."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    skip = ["*.c", "*.so", "__pycache__"] + ([] if with_pyx else ["*.pyx"])
    shutil.copytree(REPO / "securekeys", src / "securekeys",
                    ignore=shutil.ignore_patterns(*skip))
    return src


def _build_ext(src: Path, env: dict[str, str] | None = None,
               wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(wrap or []), sys.executable, "setup.py", "build_ext"], cwd=src,
                          env={**isolated_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_setup_names_the_missing_sources(tmp_path: Path) -> None:
    proc = _build_ext(_source_copy(tmp_path, with_pyx=False))
    assert proc.returncode != 0
    assert "no extension sources (securekeys/*.pyx" in proc.stderr, proc.stderr
    assert "securekeys/_memory.pyx" in proc.stderr


def test_setup_says_the_compiler_is_missing(tmp_path: Path) -> None:
    proc = _build_ext(_source_copy(tmp_path), env={"CC": "/nonexistent/cc"})
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "needs a C compiler" in last and "`/nonexistent/cc` was not found" in last, last
    assert "apt-get install gcc" in last and "sodium" not in last and "brew" not in last


def test_setup_says_libsodium_headers_are_missing(tmp_path: Path) -> None:
    # A private mount namespace hides /usr/include/sodium/ from this build only.
    if shutil.which("unshare") is None or not Path("/usr/include/sodium").is_dir():
        pytest.skip("needs unshare(1) and the libsodium headers in /usr/include")
    empty = tmp_path / "empty"
    empty.mkdir()
    script = f"mount --bind {empty} /usr/include/sodium && exec \"$0\" \"$@\""
    proc = _build_ext(_source_copy(tmp_path), wrap=["unshare", "--mount", "sh", "-c", script])
    if proc.returncode != 0 and "sodium" not in proc.stderr and (
            "Operation not permitted" in proc.stderr or "permission denied" in proc.stderr):
        pytest.skip(f"no mount namespace here: {proc.stderr.strip()}")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "libsodium headers (sodium.h)" in last and "apt-get install libsodium-dev" in last, last
    assert "brew" not in last


def test_setup_says_argon2_header_is_missing(tmp_path: Path) -> None:
    # /dev/null bound over /usr/include/argon2.h, in a private mount namespace:
    # the header is there but declares nothing, as if it were not.
    header = Path("/usr/include/argon2.h")
    if shutil.which("unshare") is None or not header.is_file():
        pytest.skip("needs unshare(1) and the Argon2 header in /usr/include")
    script = f"mount --bind /dev/null {header} && exec \"$0\" \"$@\""
    proc = _build_ext(_source_copy(tmp_path), wrap=["unshare", "--mount", "sh", "-c", script])
    if proc.returncode != 0 and "argon2" not in proc.stderr and (
            "Operation not permitted" in proc.stderr or "permission denied" in proc.stderr):
        pytest.skip(f"no mount namespace here: {proc.stderr.strip()}")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "headers (argon2.h)" in last and "apt-get install libargon2-dev" in last, last


# -- scripts/prerequisites.sh ------------------------------------------------------------

def _prerequisites(tmp_path: Path, *tools: str) -> subprocess.CompletedProcess[str]:
    """Run the script with a PATH that holds only python3 and `tools` (no
    apt-get, so it reports instead of installing, even as root)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))
    for tool in tools:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    return subprocess.run(["/bin/sh", str(REPO / "scripts" / "prerequisites.sh")],
                          env={"PATH": str(bin_dir)}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_prerequisites_print_the_one_apt_get_line(tmp_path: Path) -> None:
    proc = _prerequisites(tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[-1].split() == ["sudo", "apt-get", "install", "gcc", "pkg-config"], lines
    assert proc.stdout == ""


def test_prerequisites_present_say_nothing(tmp_path: Path) -> None:
    proc = _prerequisites(tmp_path, "gcc", "pkg-config")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
