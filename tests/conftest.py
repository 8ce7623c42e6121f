"""Shared helpers: fatal behaviour is tested in fresh interpreters; the
distributions are built once per session and installed into fresh venvs."""

from __future__ import annotations

import os
import select
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# `make matrix` tests an installed wheel, not the checkout: then securekeys must
# come from site-packages, and the distributions are those `make wheels` built.
INSTALLED = os.environ.get("SECUREKEYS_TEST_INSTALLED") == "1"
PYTHON_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"


def pytest_configure(config: pytest.Config) -> None:
    if not INSTALLED:
        return
    import securekeys
    where = Path(securekeys.__file__).resolve()
    # A child interpreter's sys.path starts with its cwd (or the script's
    # directory), which would put the checkout's securekeys/ first.
    if where.is_relative_to(REPO / "securekeys") or (Path.cwd() / "securekeys").exists():
        raise pytest.UsageError(
            f"SECUREKEYS_TEST_INSTALLED: securekeys must be the installed wheel, imported from "
            f"outside the checkout (got {where}, cwd {Path.cwd()})")


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(code: str, *, timeout: float = 120, env: dict[str, str] | None = None,
               preexec_fn: Callable[[], None] | None = None, cwd: str | None = None,
               ) -> subprocess.CompletedProcess[bytes]:
    """Run `code` in a fresh interpreter without core dumps."""
    def setup() -> None:
        _no_core_dumps()
        if preexec_fn is not None:
            preexec_fn()
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          timeout=timeout, env=env, preexec_fn=setup, cwd=cwd)


def assert_dies(code: str, sig: signal.Signals = signal.SIGABRT, *words: str) -> bytes:
    """Run `code` and check it was killed by `sig`; with SIGABRT, that it said
    `securekeys: fatal:` (and every word in `words`) first."""
    result = run_python(code)
    assert result.returncode == -sig, (result.returncode, result.stdout, result.stderr)
    if sig == signal.SIGABRT:
        assert b"securekeys: fatal: " in result.stderr, result.stderr
        for word in words:
            assert word.encode() in result.stderr, (word, result.stderr)
    assert b"REACHED" not in result.stdout
    return result.stderr


def assert_destroyed_key_is_fatal(call: str, setup: str = "") -> None:
    """`call` (securekeys.crypto's names imported) with `k`, a destroyed
    32-byte key, ends the process; `setup` runs first."""
    assert_dies("\n".join([
        "from securekeys import SecureBuffer, create_key",
        "from securekeys.crypto import *",
        setup,
        "k = create_key(32)",
        "k.destroy()",
        call,
        "print('REACHED')",
    ]), signal.SIGABRT, "destroyed")


def drain_pty(master: int, wait: float = 0.0) -> bytes:
    """What a pty's master side has to read now (or within `wait` seconds
    of each read), until it has nothing more or the other side is gone."""
    shown = b""
    while select.select([master], [], [], wait)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:   # EIO: no process holds the terminal any more
            break
        if not chunk:
            break
        shown += chunk
    return shown


def run_threads(work: Callable[[int], None], count: int = 8) -> None:
    """Run work(0) .. work(count - 1) on `count` threads started together;
    re-raise the first exception any of them raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(slot: int) -> None:
        try:
            start.wait()
            work(slot)
        except BaseException as exc:   # pragma: no cover - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.fixture
def private_dir(tmp_path: "os.PathLike[str]") -> "os.PathLike[str]":
    os.chmod(tmp_path, 0o700)
    return tmp_path


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach: pytest's own are under root's 0700."""
    path = Path(tempfile.mkdtemp(prefix="securekeys-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


# -- distributions and fresh venvs ------------------------------------------------

def isolated_env() -> dict[str, str]:
    """The environment for a command that must see only what it installs:
    no PYTHON* variables (no PYTHONPATH into the source tree), no active venv,
    no parent make's flags (`make test` runs pytest, which may run make)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "MAKE", "MFLAGS")) and k != "VIRTUAL_ENV"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run_checked(cmd: list[str | Path], cwd: Path | None = None) -> str:
    """Run a set-up command and return its stdout; fail the test with its
    output if it fails."""
    argv = [str(c) for c in cmd]
    proc = subprocess.run(argv, cwd=cwd, env=isolated_env(), capture_output=True, text=True,
                          timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail(f"set-up command failed ({proc.returncode}): {shlex.join(argv)}\n"
                    f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc.stdout


def new_venv(path: Path, *requirements: str | Path) -> Path:
    """A fresh venv at `path` with `requirements` installed by pip; its python."""
    run_checked([sys.executable, "-m", "venv", path])
    python = path / "bin" / "python"
    if requirements:
        run_checked([python, "-m", "pip", "install", "-q", *requirements])
    return python


@dataclass(frozen=True)
class Distributions:
    sdist: Path
    wheel: Path      # built from the sdist, as pip builds it for a user; links the system libsodium
    repaired: Path   # that wheel after auditwheel: libsodium bundled in securekeys.libs/
    dist: Path       # the directory where `make wheel` left the sdist and the repaired wheel


@pytest.fixture(scope="session")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    """`make wheel`, once per session, into a temporary directory: the one
    build of securekeys that every installed-package test uses.  Under
    `make matrix`, the sdist and this interpreter's wheels from `make wheels`."""
    if INSTALLED:
        dist = Path(os.environ["SECUREKEYS_TEST_DIST"])
        built = Path(os.environ["SECUREKEYS_TEST_BUILT"])
        sdists = sorted(built.glob("securekeys-*.tar.gz"))
        wheels = sorted(built.glob(f"securekeys-*-{PYTHON_TAG}-*.whl"))
        repaired = sorted(dist.glob(f"securekeys-*-{PYTHON_TAG}-*.whl"))
        assert len(sdists) == len(wheels) == len(repaired) == 1, (sdists, wheels, repaired)
        return Distributions(sdists[0], wheels[0], repaired[0], dist)
    root = tmp_path_factory.mktemp("make-wheel")
    dist, built = root / "dist", root / "built"
    run_checked(["make", "-C", REPO, "wheel", f"DIST={dist}", f"BUILT={built}"])
    sdists = sorted(built.glob("securekeys-*.tar.gz"))
    wheels = sorted(built.glob("securekeys-*.whl"))
    repaired = sorted(dist.glob("securekeys-*.whl"))
    assert len(sdists) == len(wheels) == len(repaired) == 1, (sdists, wheels, repaired)
    return Distributions(sdists[0], wheels[0], repaired[0], dist)


def readme_cython_example() -> dict[str, str]:
    """The files of the example in the README's "Using securekeys from Cython":
    code blocks whose first line is a comment naming the file."""
    files = {}
    text = (REPO / "README.md").read_text(encoding="utf-8")
    text = text[text.index("## Using securekeys from Cython"):]
    text = text[:text.index("\n## ", 1)]
    for body in re.findall(r"^```[\w-]*\n(.*?)^```$", text, re.S | re.M):
        name = re.fullmatch(r"# ([\w-]+\.(?:toml|py|pyx))", body.split("\n", 1)[0])
        if name:
            files[name.group(1)] = body
    return files


def install_readme_example(python: Path, tmp_path: Path) -> Path:
    """Write the README's Cython example project under `tmp_path` and install
    it with the venv of `python` (which has securekeys, Cython and setuptools);
    return the project directory, where example.py is."""
    files = readme_cython_example()
    assert sorted(files) == ["example.py", "keyed_hash.pyx", "pyproject.toml", "setup.py"]
    project = tmp_path / "keyed-hash"
    project.mkdir()
    for name, body in files.items():
        (project / name).write_text(body, encoding="utf-8")
    run_checked([python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "."],
                cwd=project)
    return project
