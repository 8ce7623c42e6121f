"""Shared helpers: fatal behaviour is tested in fresh interpreters."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest


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


@pytest.fixture
def private_dir(tmp_path: "os.PathLike[str]") -> "os.PathLike[str]":
    os.chmod(tmp_path, 0o700)
    return tmp_path
