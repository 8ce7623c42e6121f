"""The command line, run as users run it: a fresh process, real files, pipes and signals."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import securekeys
from securekeys.__main__ import MAX_SIZE

from conftest import run_python
from test_delivery import kubernetes_volume, set_acl
from test_files import NOBODY, SIZE, STRANGER, make_file


def cli(*args: str, cwd: Path | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run([sys.executable, "-m", "securekeys", *args], text=True, cwd=cwd,
                          timeout=60, **options)


def test_create_and_check(private_dir: Path) -> None:
    path = str(private_dir / "k")
    done = cli("create", path, "--size", "64")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == f"{path}: wrote a new 64-byte key (mode 0400)\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400 and os.path.getsize(path) == 64
    checked = cli("check", path, "--size", "64")
    assert checked.returncode == 0 and checked.stderr == ""
    assert checked.stdout.splitlines()[0] == f"{path}: OK"
    assert "  mode 0400: no group or other permissions" in checked.stdout.splitlines()
    default = cli("create", str(private_dir / "d"))
    assert default.returncode == 0 and os.path.getsize(private_dir / "d") == 32


def test_sizes_up_to_the_maximum(private_dir: Path) -> None:
    path = str(private_dir / "k")
    assert cli("create", path, "--size", str(MAX_SIZE)).returncode == 0
    assert os.path.getsize(path) == MAX_SIZE == 65536
    assert cli("check", path, "--size", str(MAX_SIZE)).returncode == 0


@pytest.mark.parametrize("command", ["create", "check"])
@pytest.mark.parametrize("size", [str(MAX_SIZE + 1), "100000000", "10000000000000"])
def test_sizes_past_the_maximum_are_usage_errors(private_dir: Path, command: str, size: str) -> None:
    done = cli(command, str(private_dir / "k"), "--size", size)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (f"securekeys: usage error: argument --size: {size} is too large: a key is "
                           f"at most 65536 bytes (64 KiB) (see securekeys {command} --help)\n")
    assert os.listdir(private_dir) == []


@pytest.mark.parametrize("args, message", [
    (["check", "{dir}/k", "--size", "16"], "{dir}/k: wrong size: expected 16 bytes, the file has 32"),
    (["check", "{dir}/missing"], "{dir}/missing: No such file or directory"),
    (["check", "{dir}"], "{dir}: is a directory, not a key file"),
    (["check", "/dev/zero"], "/dev/zero: refusing a character device: a key must be a regular file"),
    (["check", "{dir}/link"], "{dir}/link: refusing a symbolic link to {dir}/k: name the key file itself ({dir}/k)"),
    (["check", "{dir}/loose"], "{dir}/loose: refusing a key with permissions 0644: group or others may access it "
                               "(no group/other bits: e.g. 0400 or 0600)"),
    (["create", "{dir}/k"], "{dir}/k: refusing to replace an existing file"),
    (["create", "{dir}/nodir/k"], "{dir}/nodir/k: cannot open its directory: No such file or directory"),
])
def test_errors_are_one_line_exit_1(private_dir: Path, args: list[str], message: str) -> None:
    make_file(private_dir / "k", b"k" * SIZE)
    make_file(private_dir / "loose", b"l" * SIZE, 0o644)
    (private_dir / "link").symlink_to(private_dir / "k")
    before = sorted(os.listdir(private_dir))
    done = cli(*[a.format(dir=private_dir) for a in args])
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"securekeys: error: {message.format(dir=private_dir)}\n"
    assert sorted(os.listdir(private_dir)) == before


def test_create_in_a_missing_directory_names_the_path_given(private_dir: Path) -> None:
    done = cli("create", "nodir/k", cwd=private_dir)
    assert done.returncode == 1
    assert done.stderr == "securekeys: error: nodir/k: cannot open its directory: No such file or directory\n"


def test_check_a_key_behind_a_strangers_directory_link(private_dir: Path) -> None:
    (private_dir / "real").mkdir()
    make_file(private_dir / "real" / "k", b"k" * SIZE)
    (private_dir / "via").symlink_to("real")
    os.lchown(private_dir / "via", STRANGER, STRANGER)
    done = cli("check", str(private_dir / "via" / "k"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert f"the symbolic link {private_dir}/via -> real owned by uid {STRANGER}" in done.stderr


@pytest.mark.parametrize("args", [[], ["bogus"], ["create"], ["check", "x", "--size", "0"],
                                  ["check", "x", "--size", "many"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    done = cli(*args)
    assert done.returncode == 2 and done.stderr.startswith("securekeys: usage error: ")
    assert done.stderr.count("\n") == 1 and "--help)" in done.stderr


def test_a_path_or_link_target_cannot_add_a_line(private_dir: Path) -> None:
    # A newline in a name would let whoever names the file fake a line of ours.
    fake = "k\nsecurekeys: k: OK"
    done = cli("check", str(private_dir / fake))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "k\\nsecurekeys: k: OK" in done.stderr
    os.symlink("t\u2028securekeys: forged", private_dir / "link")
    done = cli("check", str(private_dir / "link"))
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    made = cli("create", str(private_dir / "new\nline"))
    assert made.returncode == 0 and made.stdout.count("\n") == 1, made.stdout


@pytest.mark.parametrize("command, example", [
    ([], "example: securekeys create app.key && securekeys check app.key"),
    (["create"], "example: securekeys create /etc/myapp/app.key --size 32"),
    (["check"], "example: securekeys check /etc/myapp/app.key --size 32"),
    (["info"], "example: securekeys info"),
])
def test_help_shows_an_example(command: list[str], example: str) -> None:
    done = cli(*command, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout
    assert example in done.stdout.splitlines()


def test_help_documents_the_maximum_size() -> None:
    assert f"1 to {MAX_SIZE}" in cli("create", "--help").stdout


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout == f"securekeys {securekeys.__version__}\n"


def test_info() -> None:
    done = cli("info")
    assert done.returncode == 0 and done.stderr == ""
    for field in ("libsodium version", "mlocked", "RLIMIT_MEMLOCK", "core dump", "vm.max_map_count"):
        assert field in done.stdout
    [locked] = [line for line in done.stdout.splitlines() if line.startswith("locked by securekeys")]
    assert "pool memory reserved for keys" in locked and "free key slots kept for reuse" in locked


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("securekeys")
    done = subprocess.run([str(script), "info"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "libsodium version" in done.stdout


# -- standard output that goes away --------------------------------------------------

@pytest.mark.parametrize("command", ["create", "check", "info"])
def test_a_reader_that_closes_stdout_early_is_not_an_error(private_dir: Path, command: str) -> None:
    # `securekeys create k | head -c0`: the key is written, nothing is wrong.
    path = private_dir / "k"
    if command == "check":
        make_file(path, b"k" * SIZE)
    read_end, write_end = os.pipe()
    os.close(read_end)   # the reader is gone before we write
    try:
        done = cli(command, *([str(path)] if command != "info" else []), stdout=write_end)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")
    assert os.path.getsize(path) == SIZE if command != "info" else True


def test_a_full_stdout_is_an_error_that_says_the_key_was_written(private_dir: Path) -> None:
    with open("/dev/full", "w") as full:
        done = cli("create", str(private_dir / "k"), stdout=full)
    assert done.returncode == 1
    assert done.stderr == "securekeys: error: standard output: No space left on device (the create itself succeeded)\n"
    assert os.path.getsize(private_dir / "k") == SIZE


def test_a_closed_stdout_is_not_an_error(private_dir: Path) -> None:
    done = subprocess.run(f'exec {sys.executable} -m securekeys create {private_dir / "k"} >&-',
                          shell=True, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert os.path.getsize(private_dir / "k") == SIZE


# -- Ctrl-C --------------------------------------------------------------------------

# Run the CLI with one step made slow, so that SIGINT lands inside it.
SLOW_STEP = """
import os, sys, time
from securekeys.__main__ import main
slow_name, marker = sys.argv[1], sys.argv[2]
real = getattr(os, slow_name)
def slow(*args, **kwargs):
    if not os.path.exists(marker):
        with open(marker + '.new', 'w') as f:
            f.write(str(os.getpid()))
        os.rename(marker + '.new', marker)   # the parent's cue: we are inside the step now
        time.sleep(60)
    return real(*args, **kwargs)
setattr(os, slow_name, slow)
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("command, slow_step", [("create", "fsync"), ("check", "fstat")])
def test_ctrl_c_is_one_line_and_death_by_sigint(private_dir: Path, command: str, slow_step: str) -> None:
    path = private_dir / "k"
    if command == "check":
        make_file(path, b"k" * SIZE)
    marker = private_dir.parent / f"{private_dir.name}.marker"
    # Through a shell, to see the status a user sees: `$?` after Ctrl-C.
    shell = subprocess.Popen(["sh", "-c", '"$@"; echo "status $?"',
                              "sh", sys.executable, "-c", SLOW_STEP, slow_step, str(marker), command, str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and shell.poll() is None
        time.sleep(0.01)
    os.kill(int(marker.read_text()), signal.SIGINT)
    out, err = shell.communicate(timeout=60)
    marker.unlink()
    assert out == "status 130\n" and err == "securekeys: interrupted\n"
    if command == "create":   # interrupted before the key was complete: nothing at all
        assert os.listdir(private_dir) == []


@pytest.mark.parametrize("command", [["info"], ["create", "k"]])
def test_a_bad_backend_is_one_line(command: list[str], private_dir: os.PathLike[str]) -> None:
    done = cli(*command, env=dict(os.environ, SECUREKEYS_BACKEND="bogus"), cwd=private_dir)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "bogus" in done.stderr
    assert os.listdir(private_dir) == []


# -- delivered keys: --trust, --encoding, --beneath ----------------------------------

@pytest.mark.parametrize("encoding, length", [("hex", 65), ("base64", 45), ("base64url", 45)])
def test_create_and_check_text_keys(private_dir: Path, encoding: str, length: int) -> None:
    path = str(private_dir / "k")
    done = cli("create", path, "--encoding", encoding)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == (f"{path}: wrote a new 32-byte key as {encoding} text "
                           f"({length - 1} characters and a newline, mode 0400)\n")
    assert os.path.getsize(path) == length and stat.S_IMODE(os.stat(path).st_mode) == 0o400
    checked = cli("check", path, "--encoding", encoding)
    assert checked.returncode == 0, checked
    assert checked.stdout.splitlines()[-1].startswith(f"  a 32-byte key as {encoding} text: {length - 1} characters")
    raw = cli("check", path)
    assert raw.returncode == 1 and raw.stderr.count("\n") == 1
    assert f"the file has {length} (the length of a 32-byte key as" in raw.stderr
    assert f"pass --encoding {'hex' if encoding == 'hex' else 'base64'} if it is one)" in raw.stderr


def cli_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as uid 65534: imported first, since the standard library is
    out of reach once the child has dropped root."""
    # locale: gettext (argparse's messages) imports it only when first used
    # from Python 3.13 on, which as uid 65534 would be too late.
    code = f"""
import os, sys
import locale
import securekeys.__main__
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
sys.exit(securekeys.__main__.main({list(args)!r}))
"""
    result = run_python(code)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def test_check_a_kubernetes_secret_as_the_service(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("building the volume needs root")
    mount = kubernetes_volume(shared_dir, {"tls.key": os.urandom(SIZE)}, 0o440)
    done = cli_as_nobody("check", "tls.key", "--beneath", str(mount), "--trust", "root-managed")
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.splitlines() == [
        f"{mount}/tls.key: OK",
        "  a regular file with one name (no other hard link)",
        f"  resolved beneath {mount}: links inside it followed, none leading out of it or onto another filesystem",
        "  owned by root, who delivers it (trusted as root-managed); group gid 65534",
        "  mode 0440: group read at most, no other permissions",
        "  exactly 32 bytes, read into guarded memory (locked)",
    ]
    strict = cli_as_nobody("check", "tls.key", "--beneath", str(mount))
    assert strict.returncode == 1 and strict.stdout == ""
    assert strict.stderr == (f"securekeys: error: {mount}/tls.key: refusing a key owned by uid 0: --trust strict "
                             "accepts keys owned by this process (uid 65534) (if root delivers it (Kubernetes "
                             "fsGroup, a Swarm secret's gid, a root-owned mount), pass --trust root-managed)\n")
    link = cli_as_nobody("check", str(mount / "tls.key"), "--trust", "root-managed")
    assert link.stderr == (f"securekeys: error: {mount}/tls.key: refusing a symbolic link to ..data/tls.key: "
                           f'a Kubernetes secret volume: read "tls.key" with --beneath {mount}\n')


def test_check_refusals_are_one_line_with_the_fix(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("building the volume needs root")
    mount = kubernetes_volume(shared_dir, {"open.key": os.urandom(SIZE)}, 0o644)
    world = cli_as_nobody("check", "open.key", "--beneath", str(mount), "--trust", "root-managed")
    assert world.returncode == 1 and world.stdout == ""
    assert world.stderr == (f"securekeys: error: {mount}/open.key: refusing a key with permissions 0644: others may "
                            "access it (a Kubernetes secret volume: set defaultMode: 0400 on the volume and "
                            "fsGroup: 65534 in the pod's securityContext, then pass --trust root-managed)\n")
    credential = shared_dir / "db.key"
    make_file(credential, os.urandom(SIZE), 0o400)
    os.chown(credential, 0, 0)
    set_acl(credential, users={NOBODY: 4, STRANGER: 4})
    acl = cli_as_nobody("check", str(credential), "--trust", "systemd")
    assert acl.returncode == 1 and acl.stderr.count("\n") == 1
    assert acl.stderr.endswith("setfacl --set u::r,u:65534:r,g::-,o::- PATH)\n")
    escape = cli_as_nobody("check", "../db.key", "--beneath", str(mount))
    assert escape.returncode == 1 and escape.stderr == f"securekeys: error: '../db.key' leaves --beneath {mount} through '..'\n"
    mounted = cli_as_nobody("check", "proc/self/status", "--beneath", "/")
    assert mounted.stderr == ("securekeys: error: /proc/self/status: refusing a path that crosses into another "
                              "filesystem mounted inside /: pass that mount point as --beneath\n")


def test_check_a_systemd_credential_as_the_service(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("ACLs on root's files need root")
    path = shared_dir / "db.key"
    make_file(path, os.urandom(SIZE), 0o400)
    os.chown(path, 0, 0)
    set_acl(path, users={NOBODY: 4})
    done = cli_as_nobody("check", str(path), "--trust", "systemd")
    assert done.returncode == 0, done
    assert "  owned by root, mode 0400 plus a POSIX ACL granting read to uid 65534 alone (a systemd credential)" \
        in done.stdout.splitlines()


@pytest.mark.parametrize("args", [["check", "k", "--trust", "lenient"], ["check", "k", "--encoding", "base32"],
                                  ["create", "k", "--encoding", "base32"], ["create", "k", "--trust", "strict"],
                                  ["create", "k", "--beneath", "/tmp"]])
def test_bad_delivery_options_are_usage_errors(private_dir: Path, args: list[str]) -> None:
    done = cli(*args, cwd=private_dir)
    assert done.returncode == 2 and done.stderr.startswith("securekeys: usage error: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert os.listdir(private_dir) == []


# -- output encodings and a missing stderr ------------------------------------------

def ascii_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    return subprocess.run([sys.executable, "-m", "securekeys", *args], capture_output=True, cwd=cwd,
                          env=env, timeout=60)


def test_a_path_the_output_encoding_cannot_write_is_escaped_not_a_traceback(private_dir: Path) -> None:
    # Before: create wrote the key, then died of UnicodeEncodeError printing
    # its report; a refusal's line was lost (stderr failed the same way).
    created = ascii_cli("create", "clé.key", cwd=private_dir)
    assert (created.returncode, created.stderr) == (0, b""), created
    assert created.stdout == b"cl\\xe9.key: wrote a new 32-byte key (mode 0400)\n"
    checked = ascii_cli("check", "clé.key", cwd=private_dir)
    assert (checked.returncode, checked.stderr) == (0, b"") and checked.stdout.startswith(b"cl\\xe9.key: OK\n")
    for args, status in ((["check", "clé.key", "--size", "16"], 1), (["create", "clé.key"], 1),
                         (["check", "nö.key"], 1), (["check", "--trust", "é", "k"], 2),
                         (["rewrap", "clé.key", "new.key", "--kek", "clé.key", "--new-kek", "clé.key"], 1)):
        refused = ascii_cli(*args, cwd=private_dir)
        assert refused.returncode == status and refused.stdout == b"", (args, refused)
        assert refused.stderr.startswith(b"securekeys: ") and refused.stderr.count(b"\n") == 1, (args, refused)
        assert b"Traceback" not in refused.stderr and b"\\x" in refused.stderr, (args, refused)


def test_an_undecodable_path_is_escaped_in_a_utf8_locale(private_dir: Path) -> None:
    name = b"k\xff.key"   # not UTF-8: the path reaches Python as a surrogate escape
    done = subprocess.run([sys.executable.encode(), b"-m", b"securekeys", b"create", name], capture_output=True,
                          cwd=private_dir, env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=60)
    assert (done.returncode, done.stderr) == (0, b""), done
    assert done.stdout == b"k\\udcff.key: wrote a new 32-byte key (mode 0400)\n"
    assert os.path.getsize(private_dir / os.fsdecode(name)) == SIZE


def test_without_stderr_the_error_goes_nowhere_never_to_stdout(private_dir: Path) -> None:
    # Before: print(file=None) fell back to stdout, which may carry a key.
    for args in (["check", "missing"], ["check", "--size", "0", "k"], ["create", str(private_dir)]):
        done = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-m", "securekeys", *args],
                              capture_output=True, timeout=60, cwd=private_dir)
        assert done.returncode in (1, 2) and done.stdout == b"", (args, done)


def test_without_stderr_a_created_key_takes_no_standard_descriptor(private_dir: Path) -> None:
    # fd 2 closed: the first file opened would be number 2; /dev/null holds
    # it first, so the key file and its directory get other numbers.
    done = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-c", """
import os, sys
from securekeys import writing
real = writing._new_file
def spy(dir_fd, name):
    fd, temp = real(dir_fd, name)
    print("fds", dir_fd, fd, os.readlink("/proc/self/fd/2"))
    return fd, temp
writing._new_file = spy
from securekeys.__main__ import main
sys.exit(main(["create", "k"]))
"""], capture_output=True, timeout=60, cwd=private_dir)
    assert done.returncode == 0, done
    words = done.stdout.decode().split("\n")[0].split()
    assert words[0] == "fds" and int(words[1]) > 2 and int(words[2]) > 2 and words[3] == os.devnull, done
    assert os.path.getsize(private_dir / "k") == SIZE


def test_with_sys_stderr_none_the_error_goes_to_fd_2(private_dir: Path) -> None:
    done = run_python("""
import sys
sys.stderr = None   # as an embedder may leave it; fd 2 is still the process's stderr
from securekeys.__main__ import main
sys.exit(main(["check", "missing"]))
""", cwd=str(private_dir))
    assert done.returncode == 1 and done.stdout == b"", done
    assert done.stderr == b"securekeys: error: missing: No such file or directory\n", done
