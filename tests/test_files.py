"""read_key / write_key against real files, modes, owners and processes."""

from __future__ import annotations

import errno
import gc
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from securekeys import KeyFileError, Protection, SecureBuffer, SecureKey, create_key, read_key, write_key
from securekeys._memory import live_buffers

from conftest import assert_dies, run_python

SIZE = 32
NOBODY = 65534      # the unprivileged user the tests drop to (root ignores permissions)
STRANGER = 4242     # a uid that owns nothing of ours


def make_file(path: Path, content: bytes, mode: int = 0o400) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)
    os.chmod(path, mode)
    return path


def key_bytes(key: SecureBuffer) -> bytes:
    with key.reading() as view:   # test code may copy; the library never does
        return bytes(view)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def mappings() -> int:
    with open("/proc/self/maps", encoding="ascii") as f:
        return sum(1 for _ in f)


def run_as_nobody(code: str) -> subprocess.CompletedProcess[bytes]:
    """Run `code` as uid and gid 65534 with no supplementary groups; it drops
    them after start-up, because the interpreter's files live under /root."""
    return run_python("""
import os, securekeys
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
""" + code)


def nobody_owns(path: Path, mode: int) -> Path:
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, mode)
    return path


# -- read_key -------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o400, 0o600, 0o700, 0o200, 0o000])
def test_read_key_reads_exact_bytes_readonly(private_dir: Path, mode: int) -> None:
    content = os.urandom(SIZE)
    path = make_file(private_dir / "k", content, mode)
    key = read_key(path, SIZE)
    assert isinstance(key, SecureKey)
    assert key.state is Protection.READONLY and key.locked
    assert key_bytes(key) == content


def test_read_key_accepts_str_bytes_and_pathlike(private_dir: Path) -> None:
    path = make_file(private_dir / "k", b"k" * SIZE)
    for form in (str(path), os.fsencode(path), path):
        assert key_bytes(read_key(form, SIZE)) == b"k" * SIZE


@pytest.mark.parametrize("bits", range(1, 0o100))
def test_every_group_or_other_bit_is_refused(private_dir: Path, bits: int) -> None:
    mode = 0o600 | bits
    path = make_file(private_dir / "k", b"k" * SIZE, mode)
    with pytest.raises(KeyFileError) as info:
        read_key(path, SIZE)
    assert f"permissions {mode:04o}:" in str(info.value)
    assert info.value.filename == str(path)


def test_key_owned_by_someone_else_is_refused(private_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    path = make_file(private_dir / "k", b"k" * SIZE)
    os.chown(path, 4242, 4242)
    with pytest.raises(KeyFileError, match="uid 4242"):
        read_key(path, SIZE)


def test_fifo_is_refused_without_blocking(private_dir: Path) -> None:
    path = private_dir / "fifo"
    os.mkfifo(path, 0o600)
    with pytest.raises(KeyFileError, match="FIFO"):
        read_key(path, SIZE)


def test_fifo_with_a_writer_is_refused(private_dir: Path) -> None:
    path = private_dir / "fifo"
    os.mkfifo(path, 0o600)
    writer = os.open(path, os.O_RDWR)   # a writer that never writes
    try:
        with pytest.raises(KeyFileError, match="FIFO"):
            read_key(path, SIZE)
    finally:
        os.close(writer)


def test_dev_zero_is_refused() -> None:
    with pytest.raises(KeyFileError, match="character device"):
        read_key("/dev/zero", SIZE)


def test_directory_is_an_oserror(private_dir: Path) -> None:
    with pytest.raises(IsADirectoryError) as info:
        read_key(private_dir, SIZE)
    assert info.value.filename == str(private_dir)


def test_missing_file(private_dir: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        read_key(private_dir / "missing", SIZE)
    assert info.value.filename == str(private_dir / "missing")


def test_symlinks_are_refused_naming_the_target_and_the_fix(private_dir: Path) -> None:
    good = make_file(private_dir / "good", b"k" * SIZE)
    (private_dir / "link").symlink_to(good)
    (private_dir / "relative").symlink_to("good")
    (private_dir / "dangling").symlink_to(private_dir / "nowhere")
    for name, target, real in (("link", good, good), ("relative", "good", good),
                               ("dangling", private_dir / "nowhere", private_dir / "nowhere")):
        with pytest.raises(KeyFileError) as info:
            read_key(private_dir / name, SIZE)
        assert info.value.strerror == f"refusing a symbolic link to {target}: name the key file itself ({real})"
        assert info.value.filename == str(private_dir / name)


def test_a_loop_of_links_in_the_directories_is_an_oserror(private_dir: Path) -> None:
    (private_dir / "a").symlink_to("b")
    (private_dir / "b").symlink_to("a")
    with pytest.raises(OSError) as info:
        read_key(private_dir / "a" / "k", SIZE)
    assert info.value.errno == errno.ELOOP and "refusing" not in str(info.value)


def test_a_terminal_is_refused_and_never_becomes_the_controlling_terminal() -> None:
    # Without O_NOCTTY a session leader with no controlling terminal that
    # opens a terminal acquires it: read_key must refuse it and leave none.
    result = run_python("""
import errno, os
from securekeys import KeyFileError, read_key
os.setsid()
master, slave = os.openpty()   # openpty itself opens the slave with O_NOCTTY
name = os.ttyname(slave)
os.close(slave)
try:
    read_key(name, 32)
except KeyFileError as e:
    print('refused:', e.strerror)
try:
    os.open('/dev/tty', os.O_RDONLY)
    print('a controlling terminal')
except OSError as e:
    print('no controlling terminal:', errno.errorcode[e.errno])
""")
    assert result.stdout.decode().splitlines() == [
        "refused: refusing a character device: a key must be a regular file",
        "no controlling terminal: ENXIO"], result


# -- hard links and links in the key's directories --------------------------------

def test_a_key_with_another_hard_link_is_refused(private_dir: Path) -> None:
    path = make_file(private_dir / "k", b"k" * SIZE)
    (private_dir / "elsewhere").mkdir()
    other = private_dir / "elsewhere" / "copy"
    os.link(path, other)
    for name in (path, other):
        with pytest.raises(KeyFileError) as info:
            read_key(name, SIZE)
        message = str(info.value)
        assert info.value.filename == str(name)
        assert "refusing a key with 2 hard links" in message and f"find / -xdev -samefile {name};" in message
    other.unlink()   # the fix the message gives
    assert key_bytes(read_key(path, SIZE)) == b"k" * SIZE


def link_chain(private_dir: Path, owner: int) -> tuple[Path, bytes]:
    """real/k holding a key, and via -> real owned by `owner`."""
    (private_dir / "real").mkdir()
    content = os.urandom(SIZE)
    make_file(private_dir / "real" / "k", content)
    via = private_dir / "via"
    via.symlink_to("real")
    os.lchown(via, owner, owner)
    return via, content


def test_directory_links_of_root_or_this_user_are_followed(private_dir: Path) -> None:
    via, content = link_chain(private_dir, os.geteuid())
    (private_dir / "chain").symlink_to(via)                  # a link to a link
    (private_dir / "absolute").symlink_to(private_dir / "real")
    for path in (via / "k", private_dir / "chain" / "k", private_dir / "absolute" / "k",
                 private_dir / "real" / ".." / "via" / "." / "k"):
        assert key_bytes(read_key(path, SIZE)) == content


@pytest.mark.parametrize("shape", ["via/k", "chain/k", "real/../via/k", "relative"])
def test_a_directory_link_owned_by_another_user_is_refused(
        private_dir: Path, monkeypatch: pytest.MonkeyPatch, shape: str) -> None:
    via, _ = link_chain(private_dir, STRANGER)
    (private_dir / "chain").symlink_to("via")    # ours, but it leads through theirs
    if shape == "relative":
        monkeypatch.chdir(private_dir)
        path: Path = Path("via/k")
    else:
        path = private_dir / shape
    with pytest.raises(KeyFileError) as info:
        read_key(path, SIZE)
    owners = "root" if os.geteuid() == 0 else f"root or uid {os.geteuid()}"
    assert info.value.strerror == (
        f"refusing a path through the symbolic link {via} -> real owned by uid {STRANGER}: "
        f"only links owned by {owners} are followed; name the key by a path without it")
    assert info.value.filename == str(path)


def test_dot_dot_after_a_directory_link_is_the_kernels(private_dir: Path) -> None:
    # a/b -> ../x/y, so a/b/../k is x/k (where the kernel goes), not a/k.
    for directory in ("a", "x", "x/y"):
        (private_dir / directory).mkdir()
    make_file(private_dir / "a" / "k", b"a" * SIZE)
    make_file(private_dir / "x" / "k", b"x" * SIZE)
    link = private_dir / "a" / "b"
    link.symlink_to("../x/y")
    path = private_dir / "a" / "b" / ".." / "k"
    assert key_bytes(read_key(path, SIZE)) == b"x" * SIZE
    os.lchown(link, STRANGER, STRANGER)
    with pytest.raises(KeyFileError, match="symbolic link"):
        read_key(path, SIZE)


def test_system_links_such_as_var_run_are_followed() -> None:
    if not os.path.islink("/var/run") or os.lstat("/var/run").st_uid != 0 or not os.access("/run", os.W_OK):
        pytest.skip("needs /var/run -> /run and a writable /run")
    real = Path(tempfile.mkdtemp(dir="/run"))
    try:
        content = os.urandom(SIZE)
        make_file(real / "k", content)
        assert key_bytes(read_key(Path("/var/run") / real.name / "k", SIZE)) == content
    finally:
        shutil.rmtree(real)


def test_directory_links_as_an_unprivileged_user(shared_dir: Path) -> None:
    real = shared_dir / "real"
    real.mkdir()
    nobody_owns(real, 0o700)
    nobody_owns(make_file(real / "k", b"n" * SIZE), 0o400)
    for name, owner in (("roots", 0), ("own", NOBODY), ("strangers", STRANGER)):
        (shared_dir / name).symlink_to("real")
        os.lchown(shared_dir / name, owner, owner)
    result = run_as_nobody(f"""
from securekeys import KeyFileError, read_key
for name in ('roots', 'own', 'strangers'):
    try:
        read_key(os.path.join({str(shared_dir)!r}, name, 'k'), 32)
        print(name, 'read')
    except KeyFileError as e:
        print(name, e.strerror)
""")
    assert result.stdout.decode().splitlines() == [
        "roots read", "own read",
        f"strangers refusing a path through the symbolic link {shared_dir}/strangers -> real owned by uid "
        f"{STRANGER}: only links owned by root or uid {NOBODY} are followed; name the key by a path without it",
    ], result


def test_a_directory_link_swapped_during_the_read_is_caught(
        private_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stranger's link is in place when the file is opened and ours when
    # the path is checked: the check must not vouch for the file it did not open.
    via, _ = link_chain(private_dir, STRANGER)
    (private_dir / "evil").mkdir()
    make_file(private_dir / "evil" / "k", b"e" * SIZE)
    via.unlink()
    via.symlink_to("evil")
    os.lchown(via, STRANGER, STRANGER)
    real_open = os.open

    def open_then_swap(path: str, flags: int, *args: int, **kwargs: int) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if str(path).endswith("via/k"):
            (private_dir / "ours").symlink_to("real")
            os.rename(private_dir / "ours", via)
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)
    with pytest.raises(KeyFileError, match="the path changed while the key was read: try again"):
        read_key(via / "k", SIZE)


def test_a_reader_never_gets_a_key_through_a_strangers_link(private_dir: Path) -> None:
    # An attacker flips via between our link (-> real) and theirs (-> evil),
    # as fast as it can, while we read via/k.
    via, content = link_chain(private_dir, 0)
    (private_dir / "evil").mkdir()
    make_file(private_dir / "evil" / "k", b"e" * SIZE)
    attacker = subprocess.Popen([sys.executable, "-c", f"""
import os
os.chdir({str(private_dir)!r})
started = False
while True:
    os.symlink('evil', 'tmp'); os.lchown('tmp', {STRANGER}, {STRANGER}); os.rename('tmp', 'via')
    os.symlink('real', 'tmp'); os.rename('tmp', 'via')
    if not started:
        print('flipping', flush=True)
        started = True
"""], stdout=subprocess.PIPE)
    read: list[bytes] = []
    refused = 0
    try:
        assert attacker.stdout is not None and attacker.stdout.readline() == b"flipping\n"
        for _ in range(3000):
            try:
                key = read_key(via / "k", SIZE)
            except KeyFileError:
                refused += 1
            else:
                read.append(key_bytes(key))
                key.destroy()
    finally:
        attacker.kill()
        attacker.wait()
    assert set(read) <= {content}
    assert read and refused, (len(read), refused)


@pytest.mark.parametrize("length", [0, 1, SIZE - 1, SIZE + 1, 4096])
def test_wrong_size_is_refused(private_dir: Path, length: int) -> None:
    path = make_file(private_dir / "k", b"k" * length)
    with pytest.raises(KeyFileError) as info:
        read_key(path, SIZE)
    assert f"expected {SIZE} bytes" in str(info.value) and str(length) in str(info.value)


def test_huge_file_is_refused_without_reading_it(private_dir: Path) -> None:
    path = private_dir / "huge"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.ftruncate(fd, 1 << 40)   # sparse: 1 TiB that would take forever to read
    os.close(fd)
    with pytest.raises(KeyFileError, match="1099511627776"):
        read_key(path, SIZE)


@pytest.mark.parametrize("size, error", [(0, ValueError), (-1, ValueError), (True, TypeError), ("32", TypeError)])
def test_bad_size_is_checked_before_the_disk(size: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_key("/nonexistent/never/opened", size)  # type: ignore[arg-type]


def test_errors_leave_no_fd_no_mapping_no_buffer(private_dir: Path) -> None:
    good = make_file(private_dir / "good", b"g" * SIZE)
    short = make_file(private_dir / "short", b"s" * 3)
    loose = make_file(private_dir / "loose", b"l" * SIZE, 0o644)
    bad_paths = [short, loose, private_dir / "missing", private_dir, Path("/dev/zero")]
    gc.collect()
    fds, maps, live = open_fds(), mappings(), live_buffers()
    for i in range(10_000):
        if i % 2:
            with pytest.raises(OSError):
                read_key(bad_paths[i % len(bad_paths)], SIZE)
        else:
            read_key(good, SIZE).destroy()
    gc.collect()
    assert open_fds() == fds
    assert live_buffers() == live
    assert mappings() <= maps + 4


def test_eight_threads_read_the_same_key(private_dir: Path) -> None:
    content = os.urandom(SIZE)
    path = make_file(private_dir / "k", content)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(300):
                key = read_key(path, SIZE)
                results.append(key_bytes(key))
                key.destroy()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 2400 and set(results) == {content}


# -- write_key ------------------------------------------------------------------

# What a filesystem without O_TMPFILE does: write_key then uses a temporary name.
FORCE_NAMED_TEMP = """
import errno, os
_os_open = os.open

def _without_o_tmpfile(path, flags, *args, **kwargs):
    if flags & os.O_TMPFILE == os.O_TMPFILE:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    return _os_open(path, flags, *args, **kwargs)
os.open = _without_o_tmpfile
"""

# The child dies by SIGKILL right after fsync() of the key's file: the last
# step before it is linked into place.
KILL_AT_KEY_FSYNC = """
import os, signal, stat
from securekeys import create_key, write_key
real_fsync = os.fsync
def fsync_then_die(fd):
    real_fsync(fd)
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.kill(os.getpid(), signal.SIGKILL)
os.fsync = fsync_then_die
"""


@pytest.fixture(params=["O_TMPFILE", "named"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each write_key test runs both ways write_key can write: an unnamed
    O_TMPFILE file, and a temporary name.  Returns the code that forces the
    second way in a subprocess ("" for the first)."""
    if request.param == "O_TMPFILE":
        return ""
    monkeypatch.setattr(os, "open", os.open)   # so that the test's end restores it
    exec(FORCE_NAMED_TEMP, {})
    return FORCE_NAMED_TEMP


@pytest.mark.parametrize("umask", [0, 0o077, 0o777])
def test_write_key_makes_a_0400_file_whatever_the_umask(private_dir: Path, way: str, umask: int) -> None:
    key = create_key(SIZE)
    path = private_dir / "k"
    old = os.umask(umask)
    try:
        write_key(path, key)
    finally:
        os.umask(old)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_uid == os.geteuid() and st.st_nlink == 1
    assert key_bytes(read_key(path, SIZE)) == key_bytes(key)
    assert sorted(os.listdir(private_dir)) == ["k"]   # no temporary left


def test_write_key_borrows_a_noaccess_key(private_dir: Path) -> None:
    key = create_key(SIZE)
    key.noaccess()
    write_key(private_dir / "k", key)
    assert key.state is Protection.NOACCESS


def test_write_key_takes_a_plain_secure_buffer(private_dir: Path) -> None:
    buf = SecureBuffer(5)
    with buf.writing() as view:
        view[:] = b"hello"
    write_key(str(private_dir / "k"), buf)
    assert key_bytes(read_key(private_dir / "k", 5)) == b"hello"


@pytest.mark.parametrize("key", [b"k" * SIZE, bytearray(SIZE), memoryview(b"k" * SIZE), None, "key"])
def test_write_key_rejects_non_secure_keys(private_dir: Path, key: object) -> None:
    with pytest.raises(TypeError):
        write_key(private_dir / "k", key)  # type: ignore[arg-type]
    assert os.listdir(private_dir) == []


def test_write_key_never_replaces(private_dir: Path, way: str) -> None:
    existing = make_file(private_dir / "existing", b"old", 0o600)
    (private_dir / "link").symlink_to(existing)
    (private_dir / "dangling").symlink_to(private_dir / "nowhere")
    for name in ("existing", "link", "dangling"):
        with pytest.raises(FileExistsError) as info:
            write_key(private_dir / name, create_key(SIZE))
        assert info.value.filename == str(private_dir / name)
    assert existing.read_bytes() == b"old"
    assert not (private_dir / "nowhere").exists()
    assert sorted(os.listdir(private_dir)) == ["dangling", "existing", "link"]


def test_racing_writers_of_one_path_one_wins(private_dir: Path, way: str) -> None:
    path = private_dir / "k"
    outcomes: list[str] = []

    def writer() -> None:
        try:
            write_key(path, create_key(SIZE))
            outcomes.append("wrote")
        except FileExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["exists"] * 7 + ["wrote"]
    assert os.listdir(private_dir) == ["k"]


@pytest.mark.parametrize("given, error, words", [
    ("nodir/k", FileNotFoundError, "cannot open its directory: No such file or directory"),
    ("file/k", NotADirectoryError, "cannot open its directory: Not a directory"),
    ("existing", FileExistsError, "refusing to replace an existing file"),
    ("sub/", IsADirectoryError, "a key path must end in a file name"),
    ("n" * 256, OSError, "File name too long"),
])
def test_errors_name_the_path_given_and_leave_nothing(
        private_dir: Path, monkeypatch: pytest.MonkeyPatch, way: str,
        given: str, error: type[OSError], words: str) -> None:
    make_file(private_dir / "file", b"f")
    make_file(private_dir / "existing", b"e")
    (private_dir / "sub").mkdir()
    before = sorted(os.listdir(private_dir))
    monkeypatch.chdir(private_dir)
    for form in (given, os.fsencode(given)):
        with pytest.raises(error) as info:
            write_key(form, create_key(SIZE))
        assert info.value.filename == form and info.value.strerror == words
        assert ".tmp" not in str(info.value)
    assert sorted(os.listdir(private_dir)) == before and os.listdir(private_dir / "sub") == []


@pytest.mark.parametrize("length", [1, 233, 234, 255])
def test_write_key_takes_every_name_up_to_name_max(private_dir: Path, way: str, length: int) -> None:
    # The temporary name ".NAME.<16 hex>.tmp" is 22 bytes longer than NAME.
    path = private_dir / ("n" * length)
    write_key(path, create_key(SIZE))
    assert os.listdir(private_dir) == [path.name] and os.path.getsize(path) == SIZE


def test_write_key_into_a_missing_directory(private_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_key(private_dir / "no" / "k", create_key(SIZE))


def test_write_key_in_a_read_only_directory(shared_dir: Path, way: str) -> None:
    readonly = shared_dir / "ro"
    readonly.mkdir()
    nobody_owns(readonly, 0o500)
    (shared_dir / "rw").mkdir()
    nobody_owns(shared_dir / "rw", 0o700)
    result = run_as_nobody(way + f"""
from securekeys import create_key, write_key
write_key({str(shared_dir / 'rw' / 'k')!r}, create_key(32))   # the same user can write here
try:
    write_key({str(readonly / 'k')!r}, create_key(32))
except PermissionError as e:
    print(e.filename, e.strerror)
""")
    assert result.stdout.decode() == f"{readonly / 'k'} Permission denied\n", result
    assert os.listdir(readonly) == [] and os.listdir(shared_dir / "rw") == ["k"]


def test_write_key_into_a_directory_it_cannot_read_leaves_nothing(shared_dir: Path, way: str) -> None:
    # A 0300 directory (write and search, no read) takes new files, but
    # cannot be opened to fsync it: write_key must fail before it creates any.
    drop = shared_dir / "drop"
    drop.mkdir()
    nobody_owns(drop, 0o300)
    result = run_as_nobody(way + f"""
from securekeys import create_key, write_key
try:
    write_key({str(drop / 'k')!r}, create_key(32))
except PermissionError as e:
    print(e.filename, e.strerror)
""")
    assert result.stdout.decode() == (
        f"{drop / 'k'} cannot open its directory: Permission denied "
        "(write_key opens it to fsync it: it needs read permission too)\n"), result
    assert os.listdir(drop) == []


def test_a_failed_directory_fsync_takes_the_key_back(private_dir: Path, way: str) -> None:
    path = private_dir / "k"
    result = run_python(way + f"""
import errno, os, stat
from securekeys import create_key, write_key
real_fsync = os.fsync
def fsync(fd):
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    real_fsync(fd)
os.fsync = fsync
try:
    write_key({str(path)!r}, create_key(32))
except OSError as e:
    print(e.errno, e.filename)
""")
    assert result.stdout.decode() == f"{errno.EIO} {path}\n", result
    assert os.listdir(private_dir) == []


def test_taking_the_key_back_spares_a_file_that_replaced_it(private_dir: Path, way: str) -> None:
    # Someone renames their own file over the new key before the directory
    # fsync fails: write_key takes back only what it linked.
    path = private_dir / "k"
    theirs = make_file(private_dir / "theirs", b"t" * SIZE)
    result = run_python(way + f"""
import errno, os, stat
from securekeys import create_key, write_key
def fsync(fd):
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.rename({str(theirs)!r}, {str(path)!r})
        raise OSError(errno.EIO, os.strerror(errno.EIO))
os.fsync = fsync
try:
    write_key({str(path)!r}, create_key(32))
except OSError as e:
    print(e.errno)
""")
    assert result.stdout.decode() == f"{errno.EIO}\n", result
    assert os.listdir(private_dir) == ["k"] and path.read_bytes() == b"t" * SIZE


def test_a_destroyed_key_dies_before_any_file_exists(private_dir: Path, way: str) -> None:
    assert_dies(way + f"""
from securekeys import create_key, write_key
key = create_key(32)
key.destroy()
write_key({str(private_dir / 'k')!r}, key)
print('REACHED')
""", signal.SIGABRT, "destroyed")
    assert os.listdir(private_dir) == []


def test_failed_write_leaves_nothing_behind(private_dir: Path, way: str) -> None:
    # RLIMIT_FSIZE makes the write itself fail (EFBIG) after the file exists:
    # it must go and nothing be linked into place.  The key is made first
    # (secretmem memory counts against RLIMIT_FSIZE too).
    path = private_dir / "k"
    result = run_python(way + f"""
import resource, signal
from securekeys import create_key, write_key
key = create_key(100_000)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
try:
    write_key({str(path)!r}, key)
except OSError as e:
    print('OSError', e.errno, e.filename)
""")
    assert result.stdout.decode() == f"OSError {errno.EFBIG} {path}\n", result
    assert os.listdir(private_dir) == []


def test_write_killed_before_the_link_leaves_no_key(private_dir: Path, way: str) -> None:
    # Kill the writer for real between the write and the link: the fsync of
    # the key's file is the last step before linking.  The longest name shows
    # that a temporary name stays within NAME_MAX.
    name = "k" * 255
    result = run_python(way + KILL_AT_KEY_FSYNC + f"""
write_key({str(private_dir / name)!r}, create_key(4096))
print('REACHED')
""")
    assert result.returncode == -signal.SIGKILL, result
    left = os.listdir(private_dir)
    if way:   # only a recognisable temporary file, never a key
        assert len(left) == 1 and re.fullmatch(r"\.k{233}\.[0-9a-f]{16}\.tmp", left[0]), left
    else:     # an unnamed file vanishes with its process
        assert left == []


def test_write_killed_at_random_moments_is_never_partial(private_dir: Path) -> None:
    code = f"""
import os, sys
from securekeys import create_key, write_key
for i in range(1000):
    write_key(os.path.join({str(private_dir)!r}, f'k{{i}}'), create_key(65536))
"""
    for delay in (0.05, 0.1, 0.2, 0.3, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", code])
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        for name in os.listdir(private_dir):
            path = private_dir / name
            assert name.startswith("k"), name   # O_TMPFILE: no temporary name, ever
            assert path.stat().st_size == 65536
            assert stat.S_IMODE(path.stat().st_mode) == 0o400
            path.unlink()


def test_a_reader_racing_the_writer_sees_nothing_or_the_whole_key(private_dir: Path) -> None:
    # The key's name appears complete, with one link: never a partial file,
    # and never the second link a temporary name would add (read_key refuses those).
    count = 100
    writer = subprocess.Popen([sys.executable, "-c", f"""
import os
from securekeys import create_key, write_key
for i in range({count}):
    write_key(os.path.join({str(private_dir)!r}, f'k{{i}}'), create_key({SIZE}))
"""])
    try:
        for i in range(count):
            while True:
                try:
                    read_key(private_dir / f"k{i}", SIZE).destroy()
                    break
                except FileNotFoundError:
                    assert writer.poll() is None or (private_dir / f"k{i}").exists()
    finally:
        writer.wait()
    assert writer.returncode == 0


# -- the default path in C: it accepts exactly what the full path accepts --------------

def _variants(private_dir: Path) -> dict[str, Path]:
    made: dict[str, Path] = {}
    for mode in (0o400, 0o600, 0o000, 0o440, 0o404, 0o640, 0o700, 0o4400, 0o2400, 0o1400):
        made[f"mode {mode:04o}"] = make_file(private_dir / f"m{mode:o}", b"k" * SIZE, mode)
    for length in (0, SIZE - 1, SIZE + 1):
        made[f"{length} bytes"] = make_file(private_dir / f"len{length}", b"k" * length)
    made["stranger's"] = make_file(private_dir / "stranger", b"k" * SIZE)
    os.chown(made["stranger's"], STRANGER, -1)
    made["two links"] = make_file(private_dir / "linked", b"k" * SIZE)
    os.link(made["two links"], private_dir / "linked-too")
    os.symlink(made["mode 0400"], private_dir / "symlink")
    made["a symlink"] = private_dir / "symlink"
    (private_dir / "real").mkdir()
    make_file(private_dir / "real" / "k", b"k" * SIZE)
    os.symlink(private_dir / "real", private_dir / "via")
    made["through my own directory link"] = private_dir / "via" / "k"
    os.mkfifo(private_dir / "fifo", 0o600)
    made["a FIFO"] = private_dir / "fifo"
    (private_dir / "dir").mkdir(mode=0o700)
    made["a directory"] = private_dir / "dir"
    made["missing"] = private_dir / "missing"
    return made


def test_the_c_path_accepts_exactly_what_the_full_path_accepts(private_dir: Path) -> None:
    from securekeys._memory import _read_key_strict
    from securekeys.files import fill_key_from_file
    before = live_buffers()
    verdicts = {}
    for name, path in _variants(private_dir).items():
        fast_key = SecureKey(SIZE)
        fast = _read_key_strict(fast_key, path)
        fast_key.destroy()
        try:
            fill_key_from_file(SecureKey(SIZE), path)
            full = True
        except OSError:
            full = False
        verdicts[name] = (fast, full)
        assert not fast or full, (name, "the C path accepted what the full path refuses")
    # The plain cases really take the C path (else this test proves nothing).
    assert verdicts["mode 0400"] == (True, True) and verdicts["mode 0600"] == (True, True)
    # Links are left to the full path, which judges them.
    assert verdicts["through my own directory link"] == (False, True)
    assert [name for name, (fast, _) in verdicts.items() if fast] == ["mode 0400", "mode 0600", "mode 0000", "mode 0700"]
    del fast_key
    gc.collect()
    assert live_buffers() == before


@pytest.mark.parametrize("tail", ["\0", "\0xyz"])
def test_a_nul_byte_in_the_path_is_refused_not_cut_short(private_dir: Path, tail: str) -> None:
    # C reads a path only up to its first NUL: "good\0xyz" would open "good".
    make_file(private_dir / "good", b"k" * SIZE)
    for path in (str(private_dir / "good") + tail, os.fsencode(str(private_dir / "good") + tail)):
        with pytest.raises(ValueError, match="null byte"):
            read_key(path, SIZE)


@pytest.mark.parametrize("mode", [0o4400, 0o2400, 0o1400, 0o7400])
def test_set_id_and_sticky_bits_are_refused(private_dir: Path, mode: int) -> None:
    path = make_file(private_dir / "k", b"k" * SIZE, mode)
    with pytest.raises(KeyFileError, match="set-user-ID, set-group-ID and sticky bits"):
        read_key(path, SIZE)


def test_the_hard_link_advice_quotes_the_path(private_dir: Path) -> None:
    # The message suggests a command: a name must not become part of it.
    path = make_file(private_dir / "x; touch PWNED #", b"k" * SIZE)
    os.link(path, private_dir / "other")
    with pytest.raises(KeyFileError) as info:
        read_key(path, SIZE)
    assert f"-samefile '{path}';" in str(info.value)


# -- leftovers of a killed no-O_TMPFILE write ---------------------------------------

DIE_AT_THE_UNLINK = """
import os, signal
real_unlink = os.unlink
def unlink_or_die(path, *args, **kwargs):
    if os.fsencode(path).endswith(b".tmp"):   # linked into place, the temporary name still there
        os.kill(os.getpid(), signal.SIGKILL)
    return real_unlink(path, *args, **kwargs)
os.unlink = unlink_or_die
"""


def test_a_write_killed_between_link_and_unlink_is_taken_back_by_the_next(private_dir: Path) -> None:
    # The key is complete under two names; read_key refuses the second link
    # until the next write_key of the path takes the temporary name away.
    path = private_dir / "k"
    result = run_python(FORCE_NAMED_TEMP + DIE_AT_THE_UNLINK + f"""
import sys
from securekeys import create_key, write_key
key = create_key({SIZE})
with key.reading() as view:
    sys.stdout.buffer.write(view.hex().encode())   # test-only: the parent compares it
    sys.stdout.flush()
write_key({str(path)!r}, key)
""")
    assert result.returncode == -signal.SIGKILL, result
    left = sorted(os.listdir(private_dir))
    assert len(left) == 2 and left[1] == "k" and re.fullmatch(r"\.k\.[0-9a-f]{16}\.tmp", left[0]), left
    with pytest.raises(KeyFileError, match="2 hard links"):
        read_key(path, SIZE)
    with pytest.raises(FileExistsError):
        write_key(path, create_key(SIZE))   # never replaces: it only cleans up
    assert os.listdir(private_dir) == ["k"]
    assert key_bytes(read_key(path, SIZE)).hex() == result.stdout.decode()


def test_a_write_killed_before_the_link_is_swept_by_the_next(private_dir: Path, way: str) -> None:
    path = private_dir / "k"
    result = run_python(FORCE_NAMED_TEMP + KILL_AT_KEY_FSYNC + f"""
write_key({str(path)!r}, create_key({SIZE}))
""")
    assert result.returncode == -signal.SIGKILL and len(os.listdir(private_dir)) == 1, result
    write_key(path, create_key(SIZE))   # either way: the one leftover is in the same directory
    if way:
        assert os.listdir(private_dir) == ["k"]
    else:   # with O_TMPFILE write_key never makes, and so never looks for, a temporary name
        assert len(os.listdir(private_dir)) == 2
    read_key(path, SIZE)


def test_what_is_not_a_dead_writers_leftover_stays(private_dir: Path) -> None:
    # A live write_key's file (its flock held), a file of another mode, a
    # name of another key, a look-alike with a bad random part: all kept.
    import fcntl
    live = make_file(private_dir / ".k.0123456789abcdef.tmp", b"x" * SIZE)
    kept = [live, make_file(private_dir / ".k.1111111111111111.tmp", b"x", mode=0o600),
            make_file(private_dir / ".j.2222222222222222.tmp", b"x"),
            make_file(private_dir / ".k.33333333333333.tmp", b"x"),
            make_file(private_dir / ".k.4444444444444444.tmp.old", b"x")]
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        gone = make_file(private_dir / ".k.5555555555555555.tmp", b"y" * SIZE)
        run = run_python(FORCE_NAMED_TEMP + f"""
from securekeys import create_key, write_key
write_key({str(private_dir / "k")!r}, create_key({SIZE}))
""")
        assert run.returncode == 0, run
    finally:
        os.close(fd)
    assert not gone.exists()
    assert sorted(os.listdir(private_dir)) == sorted([p.name for p in kept] + ["k"])


# -- a key wiped while write_key writes it --------------------------------------------

def test_a_key_wiped_during_write_key_is_key_destroyed_error_and_no_file(private_dir: Path) -> None:
    # A 256 MiB key keeps write(2) in flight; another thread strikes with
    # wipe_all() once write_key counts itself a user of the key.  Before,
    # this was OSError(EFAULT) -- or a file written partly from wiped
    # memory.  Either outcome is allowed: the whole file, or
    # KeyDestroyedError and nothing; the strike is in flight, so the second.
    for way in ("", FORCE_NAMED_TEMP):
        path = private_dir / "big"
        result = run_python(way + f"""
import os, threading
from securekeys import KeyDestroyedError, SecureBuffer, wipe_all, write_key
from securekeys._memory import _users_in_flight
size = 256 << 20
key = SecureBuffer(size)
with key.writing() as view:
    view[:] = b"\\x5a" * size   # test-only content, known to the parent
key.readonly()
in_flight = []
finished = threading.Event()
def strike():
    while _users_in_flight(key) == 0:
        if finished.is_set():
            return   # write_key never counted itself a user: nothing struck, in_flight stays []
    wipe_all()
    in_flight.append(_users_in_flight(key))   # still writing when it was wiped
striker = threading.Thread(target=strike)
striker.start()
try:
    write_key({str(path)!r}, key)
    outcome = "written"
except KeyDestroyedError as e:
    outcome = f"KeyDestroyedError {{e}}"
finished.set()
striker.join()
print(outcome, in_flight)
""")
        out = result.stdout.decode()
        assert result.returncode == 0, result
        if out.startswith("written"):
            assert out.rstrip().endswith("[0]"), out    # struck, but after the write had finished
            with open(path, "rb") as f:
                assert f.read() == b"\x5a" * (256 << 20)
            path.unlink()
        else:
            assert out.startswith("KeyDestroyedError") and "no file was left" in out, out
            assert not out.rstrip().endswith("[]"), out
            assert os.listdir(private_dir) == [], out
        assert "EFAULT" not in out and "Bad address" not in out
