# cython: language_level=3, embedsignature=True, auto_pickle=False
"""Guarded memory for secrets: the only module that allocates secret memory.

Layers, bottom up:
  * the fatal path (`_fatal`): one line on stderr, wipe every live buffer, abort;
  * the registry of live buffers (an intrusive list; the fatal path, wipe_all()
    and the fork hook walk it);
  * the slot allocator: guarded slots carved from chunks of pages, kept in a
    bounded pool for reuse, on one of two backends (anonymous memory or
    memfd_secret); KeyRing packs many small keys into shared pages;
  * `SecureBuffer` / `SecureKey`: protection as state, borrows, buffer protocol.
"""

import enum
import os
import warnings

cimport cython
from cpython.buffer cimport PyBuffer_FillInfo, PyBUF_WRITABLE
from cpython.exc cimport PyErr_CheckSignals
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.object cimport PyObject_AsFileDescriptor
from libc.errno cimport errno, EINTR, EAGAIN, ENOMEM, EPERM
from libc.stdint cimport uintptr_t
from libc.signal cimport SIG_DFL, SIG_IGN, SIGBUS, SIGPIPE, SIGSEGV, SIGTTOU, raise_, signal
from libc.stdlib cimport abort, calloc, free, realloc
from libc.string cimport memcmp, memcpy, memset, strerror, strlen
from posix.mman cimport (
    mmap, munmap, mprotect, mlock2, madvise, MAP_FAILED, MAP_PRIVATE, MAP_SHARED,
    MAP_ANONYMOUS, MAP_NORESERVE, PROT_NONE, PROT_READ, PROT_WRITE, MLOCK_ONFAULT,
    MADV_DONTDUMP, MADV_WIPEONFORK, MADV_DONTFORK, MADV_HUGEPAGE,
)
from posix.signal cimport sigaction, sigaction_t, sigemptyset, siginfo_t, SA_ONSTACK, SA_SIGINFO
from posix.fcntl cimport AT_SYMLINK_NOFOLLOW, O_CLOEXEC, O_NOCTTY, O_NONBLOCK, O_RDONLY, O_RDWR, open
from posix.stat cimport fstat, fstatat, struct_stat, S_ISREG
from posix.types cimport off_t
from posix.unistd cimport close, ftruncate, geteuid, pause, pread, pwrite, read, sysconf, write, _SC_PAGESIZE

from securekeys._checks cimport raise_errno
from securekeys._fdio cimport read_retrying
from securekeys._wipe cimport wipe_stack_and_registers
from securekeys.includes cimport sodium, system
from securekeys.errors import LockError, SecurityWarning


# The layers, bottom up.  Each file calls only the files above it, with one
# exception by design: the fatal path, which every layer may call, wipes
# every chunk through the allocator below it (_wipe_all_chunks).
include "memory_fatal.pxi"       # wipe every live buffer, one line on stderr, abort
include "memory_policy.pxi"      # lock policy and backend (anonymous / secretmem)
include "memory_layout.pxi"      # chunks of guarded pages cut into slots: the structures
include "memory_wipe.pxi"        # spare mappings; the wipe the fatal path relies on
include "memory_slots.pxi"       # chunks, slots, the pool and KeyRing runs
include "memory_registry.pxi"    # the intrusive list of live buffers; wipe_all()
include "memory_fork.pxi"        # a forked child holds no usable key
include "memory_faults.pxi"      # a fault on guarded memory: the fatal path, then the signal
include "memory_protection.pxi"  # Protection, protection as state, borrows' protection counts
include "memory_lifetime.pxi"    # in-flight users: who wipes, and when, under threads
include "memory_buffers.pxi"     # SecureBuffer, SecureKey, borrows, create_key, wipe_all
include "memory_fdread.pxi"      # read(2) from a file descriptor into a buffer
include "memory_encodings.pxi"   # key files as hex/base64 text, decoded and encoded in guarded memory
include "memory_keyring.pxi"     # KeyRing: the class over the KeyRing runs
include "memory_hooks.pxi"       # for hardening.py, report(), tests and benchmarks


# Start-up: libsodium, our canary, the backend from the environment.

if sodium.sodium_init() < 0:
    raise ImportError("securekeys: sodium_init() failed; libsodium is unusable")
if sodium.sodium_set_misuse_handler(_on_sodium_misuse) != 0:
    raise ImportError("securekeys: cannot install libsodium's misuse handler")
sodium.randombytes_buf(_canary, _CANARY_SIZE)
_take_spares()
_install_fault_handler()
if os.environ.get("SECUREKEYS_BACKEND"):
    # A backend that cannot be had is refused at the first allocation, not
    # here: an import error would reach a user of the command line as a
    # traceback, and no key can exist before that first allocation anyway.
    try:
        set_backend(os.environ["SECUREKEYS_BACKEND"])
    except (ValueError, OSError) as refusal:
        _backend_refusal = refusal


def libsodium_version():
    """The version string of the libsodium this module runs on."""
    return sodium.sodium_version_string().decode("ascii")
