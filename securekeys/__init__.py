"""securekeys: cryptographic keys in guarded, locked, never-dumped memory.

Keys are created, read from disk, used and destroyed without a copy in the
garbage-collected heap.  Misuse of a key (writing to it, touching it while
NOACCESS or after destroy()) ends the process; bad input raises an exception.
"""

from __future__ import annotations

import importlib.metadata
import os

from securekeys._memory import (
    KeyRing,
    Protection,
    SecureBuffer,
    SecureKey,
    create_key,
    destroy_key,
    get_backend,
    get_lock_policy,
    libsodium_version,
    set_backend,
    set_lock_policy,
    wipe_all,
)
from securekeys.errors import EncryptedKeyFileError, KeyDestroyedError, KeyFileError, LockError, SecurityWarning
from securekeys.files import read_credential, read_key, write_key
from securekeys.hardening import harden, report

__all__ = [
    "EncryptedKeyFileError",
    "KeyDestroyedError",
    "KeyFileError",
    "KeyRing",
    "LockError",
    "Protection",
    "SecureBuffer",
    "SecureKey",
    "SecurityWarning",
    "create_key",
    "destroy_key",
    "get_backend",
    "get_include",
    "get_lock_policy",
    "harden",
    "libsodium_version",
    "read_credential",
    "read_key",
    "report",
    "set_backend",
    "set_lock_policy",
    "wipe_all",
    "write_key",
]

def _installed_version() -> str:
    """The version pyproject.toml gave the installed distribution: the one place it is set."""
    try:
        return importlib.metadata.version("securekeys")
    except importlib.metadata.PackageNotFoundError:
        # Imported from a source tree that was built in place but never
        # installed: no metadata to ask, and no second copy of the number.
        return "0+unknown"


__version__ = _installed_version()


def get_include() -> list[str]:
    """Include directories for a downstream Cython build.

    The first is the directory holding the ``securekeys`` package, so that
    ``from securekeys cimport SecureKey`` and
    ``from securekeys.includes cimport sodium`` resolve (Cython's
    ``include_path``); the rest are where ``sodium.h`` lives when it is not on
    the C compiler's default path, as ``pkg-config --cflags-only-I libsodium``
    says now (nothing without pkg-config).  Pass the list to both Cython and
    the C compiler (``Extension(include_dirs=...)``).
    """
    import shlex
    import shutil
    import subprocess

    dirs = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    pkg_config = shutil.which("pkg-config")
    if pkg_config is not None:
        found = subprocess.run([pkg_config, "--cflags-only-I", "libsodium"],
                               capture_output=True, text=True, check=False)
        if found.returncode == 0:
            dirs += [flag[2:] for flag in shlex.split(found.stdout)
                     if flag.startswith("-I") and flag[2:] not in dirs]
    return dirs
