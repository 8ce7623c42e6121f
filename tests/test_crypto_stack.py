"""No copy of a secret is left on the stack by a crypto operation (issue 11, item 2).

libsodium leaves state on its stack (BLAKE2b's output buffer, ChaCha20's
tail block, Argon2's final hash, ...): after the call returns, a derived key,
a plaintext or a key is still readable below the stack pointer, through
/proc/self/mem and in a core file.  Each test runs one operation in a fresh
interpreter, which then reads its own main-thread `[stack]` mapping through
/proc/self/mem and looks for any 8-byte piece of every secret involved.  The
secrets are recorded by the child through a memoryview (the test's own copy,
never the library's way).  Small inputs run with the GIL held, large ones
(4 KiB) with it released.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import run_python
from test_crypto import run_in_pty

# The child's tools.  No braces: the read_password case goes through
# str.format (run_in_pty).
SCAN = '''
import ctypes, ctypes.util, hashlib, os, sys
from securekeys import SecureBuffer, SecureKey, create_key
from securekeys import crypto

def stack_now():
    # The main thread's [stack] mapping, copied by the kernel into a new
    # bytes object (heap) before anything searches it.
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            if line.rstrip().endswith(b"[stack]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split(b"-"))
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        return os.pread(fd, hi - lo, lo)
    finally:
        os.close(fd)

def record(buf):
    with buf.reading() as view:
        return bytes(view)

def report(secrets, snapshots):
    # Every secret with any 8-byte piece (at 8-byte steps) in a snapshot.
    leaked = []
    for name, secret in secrets:
        pieces = [secret[i:i + 8] for i in range(0, len(secret) - 7, 8)]
        if any(piece in snap for snap in snapshots for piece in pieces):
            leaked.append(name)
    print("LEAKED [" + ", ".join(leaked) + "]", flush=True)

def ed25519_secrets(seed, m=None):
    # What an Ed25519 signer computes from its seed (RFC 8032): the secret
    # scalar and nonce prefix, and for a message the nonce r (raw, reduced).
    az = hashlib.sha512(seed).digest()
    found = [("seed", seed), ("secret scalar", az[:32]), ("nonce prefix", az[32:])]
    if m is not None:
        r = hashlib.sha512(az[32:] + m).digest()
        ell = 2 ** 252 + 27742317777372353535851937790883648493
        found += [("nonce", r), ("reduced nonce", (int.from_bytes(r, "little") % ell).to_bytes(32, "little"))]
    return found
'''

# One operation each: record the inputs' secrets, run, take a snapshot at
# once, record the outputs, destroy everything, take a second snapshot.
CASES = {
    "derive_key": '''
master = create_key(32)
secrets = [("master key", record(master))]
sub = crypto.derive_key(master, 7, b"context!")
snaps = [stack_now()]
secrets.append(("derived key", record(sub)))
''',
    "password_key": '''
master = create_key(24)
secrets = [("password", record(master))]
sub = crypto.password_key(master, os.urandom(16), opslimit=crypto.OPSLIMIT_MIN,
                          memlimit=crypto.MEMLIMIT_MIN)
snaps = [stack_now()]
secrets.append(("derived key", record(sub)))
''',
    "aead_encrypt": '''
master, plain = create_key(32), create_key(SIZE)
secrets = [("key", record(master)), ("plaintext", record(plain))]
nonce = os.urandom(24)
box = crypto.aead_encrypt(master, plain, nonce)
snaps = [stack_now()]
secrets.append(("keystream", bytes(a ^ b for a, b in zip(box, secrets[1][1]))))
sub = plain
''',
    "aead_decrypt": '''
master, plain = create_key(32), create_key(SIZE)
secrets = [("key", record(master)), ("plaintext", record(plain))]
nonce = os.urandom(24)
box = crypto.aead_encrypt(master, plain, nonce)
plain.destroy()
sub = crypto.aead_decrypt(master, box, nonce)
snaps = [stack_now()]
''',
    "mac": '''
master = create_key(32)
secrets = [("key", record(master))]
message = os.urandom(SIZE)
tag = crypto.mac(master, message)
sub = master
snaps = [stack_now()]
''',
    "mac_verify": '''
master = create_key(32)
secrets = [("key", record(master))]
message = os.urandom(SIZE)
if not crypto.mac_verify(master, message, crypto.mac(master, message)):
    raise SystemExit("mac_verify failed")
sub = master
snaps = [stack_now()]
''',
    "keyed_hash": '''
master = create_key(64)
secrets = [("key", record(master))]
digest = crypto.keyed_hash(master, os.urandom(SIZE), 64)
sub = master
snaps = [stack_now()]
''',
    "signing_keypair": '''
pair = crypto.signing_keypair()
snaps = [stack_now()]
master = sub = pair.secret
secrets = ed25519_secrets(record(pair.secret)[:32])
''',
    "signing_keypair(seed)": '''
master = create_key(32)
secrets = ed25519_secrets(record(master))
pair = crypto.signing_keypair(master)
snaps = [stack_now()]
sub = pair.secret
''',
    "sign": '''
pair = crypto.signing_keypair()
master = sub = pair.secret
seed = record(pair.secret)[:32]
message = os.urandom(SIZE)
sig = crypto.sign(pair.secret, message)
snaps = [stack_now()]
secrets = ed25519_secrets(seed, message)
''',
    "kx_keypair(seed)": '''
master = create_key(32)
secrets = [("seed", record(master))]
pair = crypto.kx_keypair(master)
snaps = [stack_now()]
sub = pair.secret
secrets.append(("secret key", record(sub)))
''',
    "kx_session_keys": '''
pair, peer = crypto.kx_keypair(), crypto.kx_keypair()
master = pair.secret
keys = crypto.kx_client_session_keys(pair, peer.public)
snaps = [stack_now()]
sub = keys.rx
secrets = [("secret key", record(master)), ("rx", record(keys.rx)), ("tx", record(keys.tx))]
keys.tx.destroy()
''',
    "box_seal": '''
pair = crypto.box_keypair()
master, sub = pair.secret, create_key(SIZE)
secrets = [("message", record(sub))]
box = crypto.box_seal(pair.public, sub)
snaps = [stack_now()]
''',
    "box_seal_open": '''
pair = crypto.box_keypair()
master, plain = pair.secret, create_key(SIZE)
secrets = [("secret key", record(master)), ("plaintext", record(plain))]
box = crypto.box_seal(pair.public, plain)
plain.destroy()
sub = crypto.box_seal_open(pair, box)
snaps = [stack_now()]
''',
    "stream push": '''
master, sub = create_key(32), create_key(SIZE)
secrets = [("key", record(master)), ("message", record(sub))]
with crypto.StreamEncryptor(master) as enc:
    box = enc.push(sub, final=True)
snaps = [stack_now()]
''',
    # A message that is a READWRITE SecureBuffer is copied (into guarded
    # memory) before signing, as sign reads its message twice.
    "sign(SecureBuffer)": '''
pair = crypto.signing_keypair()
master = pair.secret
sub = SecureBuffer(SIZE)
fd = os.open("/dev/urandom", os.O_RDONLY)
sub.readinto(fd)
os.close(fd)
secrets = [("message", record(sub))] + ed25519_secrets(record(pair.secret)[:32])
sig = crypto.sign(pair.secret, sub)
snaps = [stack_now()]
''',
}



def variant(case: str, *edits: tuple[str, str]) -> str:
    """CASES[case] with each (old, new) line replaced; every old line must be there."""
    code = CASES[case]
    for old, new in edits:
        if old not in code:
            raise AssertionError(f"{old!r} not in {case}")
        code = code.replace(old, new)
    return code


AEAD_BOX = "box = crypto.aead_encrypt(master, plain, nonce)"
AEAD_OPEN = "sub = crypto.aead_decrypt(master, box, nonce)"
CASES["aead_decrypt_into"] = variant(
    "aead_decrypt", (AEAD_OPEN, "sub = SecureBuffer(SIZE)\ncrypto.aead_decrypt_into(master, box, nonce, sub)"))
# encrypt/decrypt: the nonce travels in front of the AEAD's output.
CASES["encrypt"] = variant("aead_encrypt", (AEAD_BOX, "box = crypto.encrypt(master, plain)[24:]"))
CASES["decrypt"] = variant(
    "aead_decrypt", (AEAD_BOX, "box = crypto.encrypt(master, plain)"),
    (AEAD_OPEN, "sub = crypto.decrypt(master, box)"))
CASES["decrypt_into"] = variant(
    "aead_decrypt", (AEAD_BOX, "box = crypto.encrypt(master, plain)"),
    (AEAD_OPEN, "sub = SecureBuffer(SIZE)\ncrypto.decrypt_into(master, box, sub)"))# The same message pulled back: what the decryptor leaves.
CASES["stream pull"] = variant("stream push", ("snaps = [stack_now()]\n", (
    "sub.destroy()\n"
    "with crypto.StreamDecryptor(master, enc.header) as dec:\n"
    "    sub, final = dec.pull(box)\n"
    "snaps = [stack_now()]\n")))

FOOTER = '''
sub.destroy()
master.destroy()
snaps.append(stack_now())
report(secrets, snaps)
'''

# (case, input size): 64 bytes runs with the GIL held, 4096 without it.
PARAMS = [
    ("derive_key", 0), ("password_key", 0),
    ("aead_encrypt", 64), ("aead_encrypt", 4096),
    ("aead_decrypt", 64), ("aead_decrypt", 4096),
    ("aead_decrypt_into", 64), ("aead_decrypt_into", 4096),
    ("encrypt", 64), ("encrypt", 4096), ("decrypt", 64), ("decrypt", 4096),
    ("decrypt_into", 64), ("decrypt_into", 4096),
    ("mac", 64), ("mac", 4096), ("mac_verify", 64), ("mac_verify", 4096),
    ("keyed_hash", 64), ("keyed_hash", 4096),
    ("signing_keypair", 0), ("signing_keypair(seed)", 0),
    ("kx_keypair(seed)", 0), ("kx_session_keys", 0),
    ("stream push", 64), ("stream push", 4096), ("stream pull", 64), ("stream pull", 4096),
    ("box_seal", 64), ("box_seal", 4096), ("box_seal_open", 64), ("box_seal_open", 4096),
    ("sign", 64), ("sign", 4096), ("sign(SecureBuffer)", 64), ("sign(SecureBuffer)", 4096),
]


def leaked(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result
    lines = [line for line in result.stdout.decode().splitlines() if line.startswith("LEAKED")]
    assert len(lines) == 1, result
    return lines[0]


@pytest.mark.parametrize("case, size", PARAMS, ids=[f"{c}-{s}" for c, s in PARAMS])
def test_no_secret_left_on_the_stack(case: str, size: int) -> None:
    code = SCAN + CASES[case].replace("SIZE", str(size)) + FOOTER
    assert leaked(run_python(code)) == "LEAKED []"


def on_a_thread(body: str) -> str:
    """Child code that runs `body` (which sets `secrets`, `master` and `sub`)
    on another thread, destroys master and sub there, and scans that
    thread's stack: an anonymous mapping, found from the stack pointer the
    kernel shows (/proc/self/task/TID/syscall) while the thread is blocked
    in read(2)."""
    # The oracle's own SHA-512 (ed25519_secrets) would leave the nonce on the
    # very stack scanned (Python 3.10's hashlib does): on the thread, only its
    # inputs are kept, and it runs on the main thread after the snapshot.
    body = body.replace("secrets = ed25519_secrets(", "secrets = ed25519_later(")
    return SCAN + """
import threading
r, w = os.pipe()
def ed25519_later(*inputs):
    return [(None, inputs)]
def work():
    global found
""" + textwrap.indent(body + "sub.destroy()\nmaster.destroy()\n", "    ") + """
    found = secrets
    os.read(r, 1)
thread = threading.Thread(target=work)
thread.start()
while True:
    try:
        with open("/proc/self/task/%d/syscall" % thread.native_id) as f:
            fields = f.read().split()
    except FileNotFoundError:
        fields = []
    if len(fields) == 9 and fields[0] == "0":      # blocked in read(2)
        break
sp = int(fields[7], 16)
with open("/proc/self/maps", "rb") as maps:
    for line in maps:
        lo, hi = (int(x, 16) for x in line.split()[0].split(b"-"))
        if lo <= sp < hi:
            break
fd = os.open("/proc/self/mem", os.O_RDONLY)
snap = os.pread(fd, hi - lo, lo)
os.close(fd)
os.write(w, b"x")
thread.join()
found = [s for name, value in found
         for s in (ed25519_secrets(*value) if name is None else [(name, value)])]
report(found, [snap])
"""


@pytest.mark.parametrize("case, size", [("derive_key", 0), ("aead_decrypt", 4096), ("sign", 64)])
def test_no_secret_left_on_a_thread_stack(case: str, size: int) -> None:
    code = on_a_thread(CASES[case].replace("SIZE", str(size)).replace("snaps = [stack_now()]\n", ""))
    assert leaked(run_python(code)) == "LEAKED []"


def test_read_password_leaves_nothing_on_the_stack() -> None:
    child = SCAN + '''
from securekeys.crypto import read_password
sub = read_password("Secret: ")
snaps = [stack_now()]
secrets = [("password", record(sub))]
master = create_key(1)
''' + FOOTER
    output, status = run_in_pty(b"", b"a passphrase of 32 random bytes!\n", child)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"LEAKED []" in output, output


# libsodium called directly (ctypes, bytes key: test only): the plaintext
# crypto_aead_..._decrypt leaves in its stack buffer, and the key or output
# crypto_kdf leaves.
DIRECT = '''
sodium = ctypes.CDLL(ctypes.util.find_library("sodium"))
if sodium.sodium_init() < 0:
    raise SystemExit("sodium_init failed")
key, nonce, plain = os.urandom(32), os.urandom(24), os.urandom(64)
box = ctypes.create_string_buffer(64 + 16)
out = ctypes.create_string_buffer(64)
length = ctypes.c_ulonglong()
if sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(box, ctypes.byref(length), plain, ctypes.c_ulonglong(64),
                                                     None, ctypes.c_ulonglong(0), None, nonce, key) != 0:
    raise SystemExit("encrypt failed")
if sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, ctypes.byref(length), None, box, ctypes.c_ulonglong(80),
                                                     None, ctypes.c_ulonglong(0), nonce, key) != 0:
    raise SystemExit("decrypt failed")
if out.raw != plain:
    raise SystemExit("wrong plaintext")
if sodium.crypto_kdf_derive_from_key(out, ctypes.c_size_t(32), ctypes.c_ulonglong(7), b"context!", key) != 0:
    raise SystemExit("kdf failed")
secrets = [("plaintext", plain), ("kdf key or output", key + out.raw[:32])]
master = sub = create_key(1)
'''


@pytest.mark.parametrize("where", ["main thread", "another thread"])
def test_the_scan_sees_what_libsodium_leaves(where: str) -> None:
    # The control: the same scans find what libsodium called directly leaves,
    # so a clean scan above means something.
    if where == "main thread":
        code = SCAN + DIRECT + "report(secrets, [stack_now()])\n"
    else:
        code = on_a_thread(DIRECT)
    assert leaked(run_python(code)) != "LEAKED []"


CHILD_DUMPS_CORE = '''
import os, resource
from securekeys import create_key
from securekeys import crypto

resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

def show(buf):
    # The test's copy of a secret, as hex on stdout; the raw copy is zeroed
    # at once, so that the only raw copies left are the library's.
    with buf.reading() as view:
        raw = bytearray(view)
    print(raw.hex(), flush=True)
    raw[:] = bytes(len(raw))

master, plain, password = create_key(32), create_key(64), create_key(24)
show(master)
show(plain)
show(password)
sub = crypto.derive_key(master, 7, b"context!")
show(sub)
sub.destroy()
nonce = os.urandom(24)
decrypted = crypto.aead_decrypt(master, crypto.aead_encrypt(master, plain, nonce), nonce)
decrypted.destroy()
stretched = crypto.password_key(password, os.urandom(16), opslimit=crypto.OPSLIMIT_MIN,
                                memlimit=crypto.MEMLIMIT_MIN)
show(stretched)
stretched.destroy()
crypto.mac(sub, b"a destroyed key: fatal, abort(), core")
'''


def test_core_file_from_the_fatal_path_holds_no_secret(tmp_path: "os.PathLike[str]") -> None:
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"cores go elsewhere here (core_pattern {pattern!r})")
    result = subprocess.run([sys.executable, "-c", CHILD_DUMPS_CORE], cwd=tmp_path,
                            capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGABRT, result
    cores = [p for p in os.listdir(tmp_path) if p.startswith("core")]
    assert len(cores) == 1, (cores, result)
    with open(os.path.join(tmp_path, cores[0]), "rb") as f:
        core = f.read()
    names = ["master key", "plaintext", "password", "derived key", "Argon2 output"]
    secrets = [bytes.fromhex(line) for line in result.stdout.decode().split()]
    assert len(secrets) == len(names), result.stdout
    leaked = [name for name, secret in zip(names, secrets)
              if any(secret[i:i + 8] in core for i in range(0, len(secret) - 7, 8))]
    assert leaked == []
