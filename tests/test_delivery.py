"""Key delivery: the layouts Kubernetes, Docker/Swarm and systemd really
produce, built on disk and read as a service's unprivileged uid reads them.

Set-up runs as root (chown, ACLs); each reader runs as uid 65534 in a child
(run_as_nobody).  Every policy's refusals are tested as hard as its acceptances.
"""

from __future__ import annotations

import errno
import gc
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from securekeys import KeyFileError, KeyRing, create_key, read_credential, read_key, write_key
from securekeys import lookup, trust
from securekeys._memory import live_buffers

from test_files import NOBODY, SIZE, STRANGER, key_bytes, make_file, open_fds, run_as_nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building the layouts needs root (chown, ACLs)")

R, W, X = 4, 2, 1
# linux/posix_acl_xattr.h: the tags, in the order the kernel requires them.
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF


def set_acl(path: Path, *, users: dict[int, int] | None = None, groups: dict[int, int] | None = None,
            owner: int = R, group: int = 0, mask: int | None = R, other: int = 0) -> None:
    """Write system.posix_acl_access in its binary form (no setfacl needed):
    version 2, then (u16 tag, u16 perm, u32 id) entries, little-endian."""
    entries = [(USER_OBJ, owner, UNDEFINED_ID)]
    entries += [(USER, perm, uid) for uid, perm in sorted((users or {}).items())]
    entries += [(GROUP_OBJ, group, UNDEFINED_ID)]
    entries += [(GROUP, perm, gid) for gid, perm in sorted((groups or {}).items())]
    if mask is not None:
        entries += [(MASK, mask, UNDEFINED_ID)]
    entries += [(OTHER, other, UNDEFINED_ID)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)
    os.setxattr(path, "system.posix_acl_access", blob)


def root_file(path: Path, content: bytes, mode: int, gid: int = 0) -> Path:
    """A key as root delivers it: owned by root, group `gid`, `mode`."""
    make_file(path, content, mode)
    os.chown(path, 0, gid)
    os.chmod(path, mode)
    return path


def read_as_nobody(*attempts: tuple[Path | str, dict[str, Any]]) -> list[str]:
    """read_key(path, 32, **options) for each attempt, as uid 65534: a line
    each, "read <hex>" or "<exception class> <strerror or message>"."""
    # A literal, not JSON: the standard library is out of reach once the
    # child is uid 65534 (it lives under root's home).
    code = f"""
from securekeys import read_key
for path, options in {[(str(path), options) for path, options in attempts]!r}:
    try:
        key = read_key(path, options.pop("size", 32), **options)
        with key.reading() as view:
            print("read", bytes(view).hex())
    except OSError as e:
        print(type(e).__name__, e.strerror)
    except ValueError as e:
        print("ValueError", e)
"""
    result = run_as_nobody(code)
    assert result.returncode == 0 and result.stderr == b"", result
    return result.stdout.decode().splitlines()


# -- Kubernetes: a secret volume as kubelet's AtomicWriter writes it --------------

def kubernetes_volume(root: Path, files: dict[str, bytes], mode: int, gid: int = NOBODY) -> Path:
    """The files in a directory named for when they were written, ..data
    pointing at it, and NAME -> ..data/NAME for each: all root's, the files
    with `mode` and group `gid` (defaultMode and fsGroup)."""
    mount = root / "secret-volume"
    mount.mkdir()
    rotate(mount, files, mode, gid, "..2024_05_01_12_00_00.123456789")
    for name in files:
        (mount / name).symlink_to(f"..data/{name}")
    return mount


def rotate(mount: Path, files: dict[str, bytes], mode: int, gid: int, stamp: str) -> None:
    """What AtomicWriter does on an update: a new timestamped directory, then
    ..data swapped to it with one rename."""
    new = mount / stamp
    new.mkdir(mode=0o755)
    for name, content in files.items():
        root_file(new / name, content, mode, gid)
    (mount / "..data_tmp").symlink_to(stamp)
    os.rename(mount / "..data_tmp", mount / "..data")


def test_kubernetes_secret_volume_with_fsgroup(shared_dir: Path) -> None:
    content = os.urandom(SIZE)
    mount = kubernetes_volume(shared_dir, {"tls.key": content}, 0o440)   # defaultMode 0400 + fsGroup
    assert read_as_nobody(
        ("tls.key", {"beneath": str(mount), "trust": "root-managed"}),
        ("./tls.key", {"beneath": str(mount), "trust": "root-managed"}),
        (mount / "..data" / "tls.key", {"trust": "root-managed"}),   # root's directory link, followed
    ) == [f"read {content.hex()}"] * 3


def test_kubernetes_refusals_name_the_fix(shared_dir: Path) -> None:
    mount = kubernetes_volume(shared_dir, {"tls.key": os.urandom(SIZE), "open.key": os.urandom(SIZE)}, 0o440)
    os.chmod(mount / "..data" / "open.key", 0o644)   # the default defaultMode
    strict, world, link = read_as_nobody(
        ("tls.key", {"beneath": str(mount)}),
        ("open.key", {"beneath": str(mount), "trust": "root-managed"}),
        (mount / "tls.key", {"trust": "root-managed"}),
    )
    assert strict == ('KeyFileError refusing a key owned by uid 0: trust="strict" accepts keys owned by this '
                      'process (uid 65534) (if root delivers it (Kubernetes fsGroup, a Swarm secret\'s gid, '
                      'a root-owned mount), pass trust="root-managed")')
    assert world == ("KeyFileError refusing a key with permissions 0644: others may access it (a Kubernetes secret "
                     "volume: set defaultMode: 0400 on the volume and fsGroup: 65534 in the pod's securityContext, "
                     'then pass trust="root-managed")')
    assert link == ('KeyFileError refusing a symbolic link to ..data/tls.key: a Kubernetes secret volume: '
                    f'read "tls.key" with beneath="{mount}"')


def test_kubernetes_rotation_is_followed(shared_dir: Path) -> None:
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    mount = kubernetes_volume(shared_dir, {"k": old}, 0o440)
    options = {"beneath": str(mount), "trust": "root-managed"}
    assert read_as_nobody(("k", options)) == [f"read {old.hex()}"]
    rotate(mount, {"k": new}, 0o440, NOBODY, "..2024_05_02_12_00_00.987654321")
    assert read_as_nobody(("k", options)) == [f"read {new.hex()}"]


def test_links_leading_out_of_beneath_are_refused(shared_dir: Path) -> None:
    mount = kubernetes_volume(shared_dir, {"k": os.urandom(SIZE)}, 0o440)
    outside = make_file(shared_dir / "outside.key", os.urandom(SIZE))
    os.chown(outside, NOBODY, NOBODY)   # a key nobody could read directly: the way there is what fails
    (mount / "up").symlink_to("../outside.key")
    (mount / "absolute").symlink_to(outside)
    (mount / "absolute-inside").symlink_to(mount / "..data" / "k")   # absolute, even pointing inside
    (mount / "dir").symlink_to("..")
    for name in ("up", "absolute", "absolute-inside", "dir/outside.key"):
        [line] = read_as_nobody((name, {"beneath": str(mount), "trust": "root-managed"}))
        assert line == (f"KeyFileError refusing a path that leads out of {mount}: a symbolic link on the way "
                        "is absolute or climbs out with '..' (only links that stay inside are followed)"), name
    assert read_as_nobody((outside, {})) == [f"read {outside.read_bytes().hex()}"]


@pytest.mark.parametrize("path, words", [
    ("/etc/passwd", "must be relative to it, not '/etc/passwd'"),
    ("../outside.key", "'../outside.key' leaves beneath="),
    ("a/../../outside.key", "leaves beneath="),
    ("", "must be relative to it, not ''"),
    (".", "names beneath="),
    ("a/..", "names beneath="),
])
def test_paths_that_cannot_be_beneath_are_value_errors_before_any_open(
        private_dir: Path, monkeypatch: pytest.MonkeyPatch, path: str, words: str) -> None:
    def no_open(*args: object) -> int:
        raise AssertionError("opened")
    monkeypatch.setattr(lookup, "_openat2", no_open)
    with pytest.raises(ValueError, match=words.replace(".", r"\.").replace("(", r"\(")):
        read_key(path, SIZE, beneath=private_dir)


def test_beneath_follows_links_that_stay_inside_as_the_kernel_does(private_dir: Path) -> None:
    content = os.urandom(SIZE)
    (private_dir / "a" / "b").mkdir(parents=True)
    make_file(private_dir / "a" / "b" / "k", content)
    (private_dir / "deep").symlink_to("a/b")
    (private_dir / "a" / "up").symlink_to("../a/b/k")
    for path in ("deep/k", "a/up", "deep/../b/k", b"a/b/k"):
        assert key_bytes(read_key(path, SIZE, beneath=os.fsencode(private_dir) if isinstance(path, bytes)
                                  else private_dir)) == content


def test_beneath_refuses_a_mount_point_inside(private_dir: Path) -> None:
    # /proc is another filesystem inside /: RESOLVE_NO_XDEV stops there.
    with pytest.raises(KeyFileError) as info:
        read_key("proc/self/status", SIZE, beneath="/")
    assert info.value.errno == errno.EXDEV and info.value.filename == "/proc/self/status"
    assert info.value.strerror == "refusing a path that crosses into another filesystem mounted inside /: " \
                                  "pass that mount point as beneath="


def test_beneath_directory_must_exist_and_be_a_directory(private_dir: Path) -> None:
    make_file(private_dir / "file", b"f")
    with pytest.raises(FileNotFoundError):
        read_key("k", SIZE, beneath=private_dir / "missing")
    with pytest.raises(NotADirectoryError):
        read_key("k", SIZE, beneath=private_dir / "file")


def test_beneath_directory_through_a_strangers_link_is_refused(private_dir: Path) -> None:
    (private_dir / "real").mkdir()
    make_file(private_dir / "real" / "k", b"k" * SIZE)
    (private_dir / "mine").symlink_to("real")
    (private_dir / "theirs").symlink_to("real")
    os.lchown(private_dir / "theirs", STRANGER, STRANGER)
    assert key_bytes(read_key("k", SIZE, beneath=private_dir / "mine")) == b"k" * SIZE
    with pytest.raises(KeyFileError, match=f"symbolic link {private_dir}/theirs -> real owned by uid {STRANGER}"):
        read_key("k", SIZE, beneath=private_dir / "theirs")


def test_a_kernel_without_openat2_is_a_clear_oserror(private_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def enosys(*args: object) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    monkeypatch.setattr(lookup, "_openat2", enosys)
    with pytest.raises(OSError) as info:
        read_key("k", SIZE, beneath=private_dir)
    assert info.value.errno == errno.ENOSYS and info.value.filename == str(private_dir / "k")
    assert "beneath= needs the openat2(2) system call (Linux 5.6 or later)" in info.value.strerror


# -- root-managed: Swarm's uid 0 / gid svc / 0440, a root-owned mount -----------

@pytest.mark.parametrize("mode, refusal", [
    (0o440, None),
    (0o400, None),   # the group may not read it, but root's other policies hold; nobody reads by group
    (0o460, "refusing a key owned by root with permissions 0460: its group may write or execute it; "
            'trust="root-managed" allows group read at most (chmod g-wx: e.g. 0440)'),
    (0o450, "refusing a key owned by root with permissions 0450: its group may write or execute it"),
    (0o444, "refusing a key with permissions 0444: others may access it (chmod o-rwx; with group read (0440) "
            'it needs trust="root-managed", or chown 65534 it and chmod 0400)'),
    (0o442, "refusing a key with permissions 0442: others may access it"),
    (0o441, "refusing a key with permissions 0441: others may access it"),
])
def test_root_managed_group_read_only_when_root_owns_it(shared_dir: Path, mode: int, refusal: str | None) -> None:
    content = os.urandom(SIZE)
    path = root_file(shared_dir / "k", content, mode, NOBODY)
    [line] = read_as_nobody((path, {"trust": "root-managed"}))
    if mode == 0o400:
        assert line == f"PermissionError Permission denied"   # the kernel's refusal: not readable by group
    elif refusal is None:
        assert line == f"read {content.hex()}"
    else:
        assert line.startswith(f"KeyFileError {refusal}"), line


def test_swarm_secret_shape(shared_dir: Path) -> None:
    content = os.urandom(SIZE)
    path = root_file(shared_dir / "db.key", content, 0o440, NOBODY)   # uid: "0", gid: <svc>, mode: 0440
    root_managed, strict, systemd = read_as_nobody((path, {"trust": "root-managed"}), (path, {}),
                                                   (path, {"trust": "systemd"}))
    assert root_managed == f"read {content.hex()}"
    assert strict.endswith('pass trust="root-managed")') and "owned by uid 0" in strict
    assert systemd == ('KeyFileError refusing a key owned by root with permissions 0440 and no POSIX ACL: '
                       'trust="systemd" accepts a root-owned key only when an ACL grants read to this uid (65534) '
                       "alone (if root delivers it (Kubernetes fsGroup, a Swarm secret's gid, a root-owned mount), "
                       'pass trust="root-managed")')


@pytest.mark.parametrize("policy", ["strict", "root-managed", "systemd"])
def test_another_owner_is_refused_by_every_policy(shared_dir: Path, policy: str) -> None:
    path = make_file(shared_dir / "k", os.urandom(SIZE), 0o440)
    os.chown(path, STRANGER, NOBODY)
    [line] = read_as_nobody((path, {"trust": policy}))
    owners = "this process (uid 65534)" if policy == "strict" else "this process (uid 65534) or root"
    assert line == (f'KeyFileError refusing a key owned by uid {STRANGER}: trust="{policy}" accepts keys owned by '
                    f"{owners} (chown 65534 it and chmod 0400)")


@pytest.mark.parametrize("policy", ["strict", "root-managed", "systemd"])
@pytest.mark.parametrize("owner", [NOBODY, 0])
def test_world_readable_is_refused_by_every_policy(shared_dir: Path, policy: str, owner: int) -> None:
    path = make_file(shared_dir / "k", os.urandom(SIZE), 0o444)
    os.chown(path, owner, NOBODY)
    if owner == 0:
        set_acl(path, users={NOBODY: R}, other=R)   # even with systemd's ACL
    [line] = read_as_nobody((path, {"trust": policy}))
    assert line.startswith("KeyFileError refusing a key with permissions 0444: "), line


@pytest.mark.parametrize("policy", ["root-managed", "systemd"])
@pytest.mark.parametrize("mode", [0o440, 0o404, 0o410])
def test_our_own_file_gets_no_group_bits_under_any_policy(shared_dir: Path, policy: str, mode: int) -> None:
    path = make_file(shared_dir / "k", os.urandom(SIZE), mode)
    os.chown(path, NOBODY, NOBODY)
    [line] = read_as_nobody((path, {"trust": policy}))
    assert line.startswith(f"KeyFileError refusing a key with permissions {mode:04o}: group or others may access it")


def test_root_managed_refuses_an_acl_naming_others(shared_dir: Path) -> None:
    # The group bits of a file with an ACL are its mask: the file's group is
    # not all that may read it.
    path = root_file(shared_dir / "k", os.urandom(SIZE), 0o440, NOBODY)
    set_acl(path, users={STRANGER: R}, group=R)
    [line] = read_as_nobody((path, {"trust": "root-managed"}))
    assert line.startswith(f"KeyFileError refusing a key owned by root with a POSIX ACL naming uid {STRANGER}: "
                           'trust="root-managed" trusts the file\'s owner and group, not an ACL')


# -- systemd: LoadCredential= on a filesystem with ACLs ---------------------------

def credential(directory: Path, name: str, content: bytes, **acl: Any) -> Path:
    """A credential as systemd writes it where ACLs work: root's, 0400, and
    an ACL entry granting the service's user read (stat shows 0440)."""
    path = root_file(directory / name, content, 0o400)
    set_acl(path, **({"users": {NOBODY: R}} | acl))
    return path


def test_systemd_credential_is_read_by_the_service(shared_dir: Path) -> None:
    content = os.urandom(SIZE)
    path = credential(shared_dir, "db.key", content)
    assert os.stat(path).st_mode & 0o777 == 0o440   # the mask shows as the group bits
    systemd, strict, root_managed = read_as_nobody((path, {"trust": "systemd"}), (path, {}),
                                                   (path, {"trust": "root-managed"}))
    assert systemd == f"read {content.hex()}"
    assert strict.endswith('(a systemd credential: see read_credential()), pass trust="systemd")'), strict
    assert root_managed.startswith("KeyFileError refusing a key owned by root with a POSIX ACL naming uid 65534")
    assert root_managed.endswith('pass trust="systemd")')


def test_systemd_credential_on_ramfs_is_chowned_and_strict(shared_dir: Path) -> None:
    # Without ACLs systemd chowns the credential to the service's user.
    content = os.urandom(SIZE)
    path = make_file(shared_dir / "db.key", content, 0o400)
    os.chown(path, NOBODY, NOBODY)
    assert read_as_nobody((path, {"trust": "systemd"}), (path, {})) == [f"read {content.hex()}"] * 2


FIX = "mode 0400 and read for uid 65534 alone: setfacl --set u::r,u:65534:r,g::-,o::- PATH"


@pytest.mark.parametrize("acl, rule", [
    ({"users": {NOBODY: R, STRANGER: R}}, f"its ACL names uid {STRANGER}, uid 65534, not this uid (65534) alone"),
    ({"groups": {STRANGER: R}}, f"its ACL names gid {STRANGER}"),
    ({"groups": {NOBODY: R}}, "its ACL names gid 65534"),
    ({"mask": R | W}, "its ACL grants its group or others access, or its mask more than read"),
    ({"users": {NOBODY: R | W}, "mask": R | W}, "its ACL grants uid 65534 more than read"),
    ({"group": R}, "its ACL grants its group or others access, or its mask more than read"),
    ({"owner": R | W}, "its owner's permissions are not read only (mode 0400)"),
])
def test_systemd_refuses_any_wider_acl(shared_dir: Path, acl: dict[str, Any], rule: str) -> None:
    path = credential(shared_dir, "k", os.urandom(SIZE), **acl)
    mode = os.stat(path).st_mode & 0o777
    [line] = read_as_nobody((path, {"trust": "systemd"}))
    assert line == (f"KeyFileError refusing a key owned by root with permissions {mode:04o}: {rule}; "
                    f'trust="systemd" accepts what LoadCredential= writes ({FIX})'), line


def test_systemd_refuses_an_acl_for_another_user_that_a_group_lets_us_read(shared_dir: Path) -> None:
    path = credential(shared_dir, "k", os.urandom(SIZE), users={STRANGER: R}, group=R)
    os.chown(path, 0, NOBODY)
    [line] = read_as_nobody((path, {"trust": "systemd"}))
    assert f"its ACL names uid {STRANGER}, not this uid (65534) alone" in line


def test_read_credential_as_the_service(shared_dir: Path) -> None:
    directory = shared_dir / "credentials"
    directory.mkdir(mode=0o755)
    content = os.urandom(SIZE)
    credential(directory, "db.key", content)
    (directory / "escape").symlink_to("../outside")
    make_file(shared_dir / "outside", os.urandom(SIZE))
    os.chown(shared_dir / "outside", NOBODY, NOBODY)
    result = run_as_nobody(f"""
os.environ["CREDENTIALS_DIRECTORY"] = {str(directory)!r}
from securekeys import KeyFileError, read_credential
with read_credential("db.key", 32).reading() as view:
    print(bytes(view).hex())
try:
    read_credential("escape", 32)
except KeyFileError as e:
    print(e.strerror)
""")
    assert result.stdout.decode().splitlines() == [
        content.hex(),
        f"refusing a path that leads out of {directory}: a symbolic link on the way is absolute or climbs out "
        "with '..' (only links that stay inside are followed)"], result


def test_read_credential_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(KeyFileError) as info:
        read_credential("db.key", SIZE)
    assert info.value.strerror == ("$CREDENTIALS_DIRECTORY is not set: this process was not started by systemd "
                                   "with LoadCredential=, LoadCredentialEncrypted= or SetCredential=")
    assert info.value.filename == "db.key"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/etc/passwd", "db.key/", b"a/b", b"..", "db\0key"])
@pytest.mark.parametrize("systemd", [True, False])
def test_read_credential_takes_a_name_only(private_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           name: str | bytes, systemd: bool) -> None:
    # A bad name is a ValueError whether or not the process runs under systemd.
    if systemd:
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(private_dir))
    else:
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ValueError, match="not a credential name"):
        read_credential(name, SIZE)
    with pytest.raises(TypeError):
        read_credential(42, SIZE)  # type: ignore[arg-type]


def test_read_credential_in_process(private_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = create_key(SIZE)
    write_key(private_dir / "api.key", key, encoding="base64")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(private_dir))
    assert read_credential("api.key", SIZE, encoding="base64") == key


# -- options, the KeyRing, and what is left behind ---------------------------------

@pytest.mark.parametrize("options", [{"trust": "lenient"}, {"trust": "STRICT"}, {"trust": None},
                                     {"encoding": "base32"}, {"encoding": "Base64"}, {"encoding": None}])
def test_unknown_options_are_value_errors_before_the_disk(options: dict[str, Any]) -> None:
    gc.collect()
    live = live_buffers()
    with pytest.raises(ValueError, match="unknown"):
        read_key("/nonexistent/never/opened", SIZE, **options)
    with pytest.raises(ValueError, match="unknown"):
        KeyRing(SIZE).read_key("/nonexistent/never/opened", **options)
    gc.collect()
    assert live_buffers() == live


def test_keyring_read_key_takes_the_same_options(shared_dir: Path) -> None:
    key = create_key(SIZE)
    mount = kubernetes_volume(shared_dir, {"k": key_bytes(key)}, 0o440, 0)
    ring = KeyRing(SIZE)
    read = ring.read_key("k", beneath=mount, trust="root-managed")
    assert read == key and len(ring) == 1
    with pytest.raises(KeyFileError):
        ring.read_key("k", beneath=mount)
    assert len(ring) == 1


def test_refusals_leave_no_fd_and_no_buffer(shared_dir: Path) -> None:
    mount = kubernetes_volume(shared_dir, {"k": os.urandom(SIZE)}, 0o460, NOBODY)
    (mount / "up").symlink_to("../elsewhere")
    acl = credential(shared_dir, "acl", os.urandom(SIZE), users={NOBODY: R, STRANGER: R})
    attempts: list[tuple[Any, dict[str, Any]]] = [
        ("k", {"beneath": mount, "trust": "root-managed"}),
        ("k", {"beneath": mount}),
        ("up", {"beneath": mount}),
        ("../x", {"beneath": mount}),
        ("k", {"beneath": shared_dir / "missing"}),
        (acl, {"trust": "systemd"}),
        (acl, {"trust": "root-managed"}),
        (acl, {"trust": "bogus"}),
    ]
    gc.collect()
    fds, live = open_fds(), live_buffers()
    for _ in range(200):
        for path, options in attempts:
            with pytest.raises((OSError, ValueError)):
                read_key(path, SIZE, **options)
    gc.collect()
    assert open_fds() == fds and live_buffers() == live


def test_delivery_hints_by_where_the_file_is() -> None:
    euid = os.geteuid()
    docker = trust._delivery_words(b"/run/secrets/db.key", b"/run/secrets/db.key", 0)
    assert docker == (f'a Docker secret: use the long syntax with uid: "{euid}" and mode: 0400 (Swarm; Compose '
                      "mounts a file secret as the host file is: chown and chmod 0400 it there)")
    kubernetes = trust._delivery_words(b"/etc/tls/..2024_05_01_12_00_00.1/tls.key", b"tls.key", 0)
    assert kubernetes.startswith("a Kubernetes secret volume: set defaultMode: 0400")
    assert trust._delivery_words(b"/etc/tls/..data/tls.key", b"/etc/tls/..data/tls.key", 0) == kubernetes
    assert trust._delivery_words(b"/srv/k", b"/srv/k", euid) == "no group/other bits: e.g. 0400 or 0600"


def test_beneath_refuses_magic_links_and_link_loops(private_dir: Path) -> None:
    (private_dir / "a").symlink_to("b")
    (private_dir / "b").symlink_to("a")
    for directory, path in ((private_dir, "a"), ("/proc/self", "exe")):
        with pytest.raises(KeyFileError) as info:
            read_key(path, SIZE, beneath=directory)
        assert info.value.errno == errno.ELOOP
        assert info.value.strerror == "refusing a path through a /proc magic link, or through more than 40 symbolic links"
