"""Text keys (hex, base64, base64url): read into guarded scratch memory and
decoded straight into the key, written from guarded memory; nothing of the
key or its text reaches ordinary memory, whether it is read or refused."""

from __future__ import annotations

import base64
import errno
import gc
import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from securekeys import KeyFileError, Protection, SecureBuffer, create_key, read_key, write_key
from securekeys._memory import live_buffers

from conftest import assert_dies, run_python
from test_files import SIZE, key_bytes, make_file, open_fds

ENCODE: dict[str, Callable[[bytes], bytes]] = {
    "hex": lambda raw: raw.hex().encode(),
    "base64": base64.b64encode,
    "base64url": base64.urlsafe_b64encode,
}
SIZES = [1, 2, 3, 16, 31, 32, 33, 64, 1000]


def text_forms(raw: bytes, encoding: str) -> list[bytes]:
    """Every spelling of `raw` that read_key accepts: with and without "="
    padding, hex in either case, each bare, with LF or with CRLF."""
    text = ENCODE[encoding](raw)
    bodies = {text, text.rstrip(b"=")}
    if encoding == "hex":
        bodies |= {text.upper(), text[:4].upper() + text[4:]}
    return [body + end for body in sorted(bodies) for end in (b"", b"\n", b"\r\n")]


@pytest.mark.parametrize("encoding", ["hex", "base64", "base64url"])
@pytest.mark.parametrize("size", SIZES)
def test_every_accepted_spelling_decodes_to_the_key(private_dir: Path, encoding: str, size: int) -> None:
    raw = os.urandom(size)
    for i, text in enumerate(text_forms(raw, encoding)):
        path = make_file(private_dir / f"k{i}", text)
        key = read_key(path, size, encoding=encoding)
        assert key.state is Protection.READONLY and key_bytes(key) == raw, text


@pytest.mark.parametrize("encoding", ["hex", "base64", "base64url"])
@pytest.mark.parametrize("size", SIZES)
def test_write_key_writes_the_text_and_a_newline(private_dir: Path, encoding: str, size: int) -> None:
    key = create_key(size)
    key.noaccess()
    path = private_dir / "k"
    write_key(path, key, encoding=encoding)
    assert key.state is Protection.NOACCESS
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_nlink == 1
    assert path.read_bytes() == ENCODE[encoding](key_bytes(key)) + b"\n"
    assert read_key(path, size, encoding=encoding) == key
    assert os.listdir(private_dir) == ["k"]


def test_write_key_with_an_unknown_encoding_writes_nothing(private_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown key encoding 'base32'"):
        write_key(private_dir / "k", create_key(SIZE), encoding="base32")  # type: ignore[arg-type]
    assert os.listdir(private_dir) == []


def test_write_key_wipes_its_text_even_when_the_write_fails(private_dir: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        write_key(private_dir / "missing" / "k", create_key(SIZE), encoding="base64")
    scratches = []
    frame = info.value.__traceback__
    while frame is not None:   # the scratch is still referenced from the traceback: it must be wiped
        text = frame.tb_frame.f_locals.get("text")
        if isinstance(text, SecureBuffer):
            scratches.append(text)
        frame = frame.tb_next
    assert scratches and all(scratch.destroyed for scratch in scratches)


def test_a_destroyed_key_dies_before_any_text_file_exists(private_dir: Path) -> None:
    assert_dies(f"""
from securekeys import create_key, write_key
key = create_key(32)
key.destroy()
write_key({str(private_dir / 'k')!r}, key, encoding="base64")
print('REACHED')
""", signal.SIGABRT, "destroyed")
    assert os.listdir(private_dir) == []


RAW = bytes(range(200, 232))          # 32 bytes whose base64 uses "+" and "/"
B64 = base64.b64encode(RAW)           # 44 characters, one "="
URL = base64.urlsafe_b64encode(RAW)
HEX = RAW.hex().encode()


@pytest.mark.parametrize("encoding, text, message", [
    ("base64", B64[:20] + b" " + B64[21:], "not valid base64: character 21 is not in its alphabet (A-Z a-z 0-9 + /), "
                                          "or is padding before the end (no spaces or line breaks inside the key)"),
    ("base64", B64[:20] + b"\n" + B64[20:-1], "character 21 is not in its alphabet"),     # a wrapped line
    ("base64", b" " + B64[:-1], "character 1 is not in its alphabet"),                  # leading whitespace
    ("base64", B64[:-1] + b"\t", 'character 44 should be "="'),                          # a tab for padding
    ("base64", B64[:10] + b"=" + B64[11:], "character 11 is not in its alphabet"),      # padding inside
    ("base64", B64[:-1] + b"A", 'not valid base64: character 44 should be "=": a 32-byte key of 44 characters '
                                'ends in 1 "=" of padding'),
    ("base64", B64[:-2] + b"B=", "its last character holds bits beyond a 32-byte key"),
    ("base64", URL, 'not valid base64, but valid base64url: pass encoding="base64url"'),
    ("base64url", B64, 'not valid base64url, but valid base64: pass encoding="base64"'),
    ("base64", B64 + b"\n\n", "wrong size: a 32-byte key in base64 is 44 characters (43 without padding), the "
                              "text has 45 (one newline may end it, nothing else)"),
    ("base64", B64[:-2] + b"\r\n", "the text has 42"),
    ("base64", B64 + b"\r", "the text has 45"),
    ("hex", HEX[:30] + b"zz" + HEX[32:], "not valid hex: characters 31-32 are not two hex digits (0-9, a-f, A-F; "
                                         "no spaces or line breaks inside the key)"),
    ("hex", HEX[:31] + b" " + HEX[32:], "characters 31-32 are not two hex digits"),
    ("hex", b"0x" + HEX[2:], "characters 1-2 are not two hex digits"),
    ("hex", HEX[:-1] + b"\n", "wrong size: a 32-byte key in hex is 64 characters, the text has 63"),
    ("hex", HEX + b"0", "the text has 65"),
    # libsodium 1.0.18 decodes any byte past 0x7f as base64's last character:
    ("base64", b"\xc3\xa9" + B64[2:], "character 1 is not in its alphabet"),           # a UTF-8 character
    ("base64url", b"\xef\xbb\xbf" + URL[3:], "character 1 is not in its alphabet"),     # a BOM over the start
    ("base64", B64[:10] + b"\xff" + B64[11:], "character 11 is not in its alphabet"),  # one corrupted byte
    ("hex", HEX[:10] + b"\xe9" + HEX[11:], "characters 11-12 are not two hex digits"),
])
def test_invalid_text_is_refused_without_a_word_of_it(private_dir: Path, encoding: str, text: bytes,
                                                       message: str) -> None:
    path = make_file(private_dir / "k", text)
    gc.collect()
    live = live_buffers()
    with pytest.raises(KeyFileError) as info:
        read_key(path, SIZE, encoding=encoding)
    assert info.value.errno == errno.EINVAL and info.value.filename == str(path)
    assert message in info.value.strerror, info.value.strerror
    shown = str(info.value)
    for i in range(len(text) - 5):   # no six characters of the text, anywhere
        assert text[i:i + 6].decode("latin-1") not in shown, (text[i:i + 6], shown)
    del info   # its traceback holds the destroyed key and scratch until then
    gc.collect()
    assert live_buffers() == live


@pytest.mark.parametrize("encoding, size, length", [("hex", 32, 0), ("hex", 32, 63), ("hex", 32, 67),
                                                    ("base64", 32, 42), ("base64", 32, 47), ("base64url", 1, 7)])
def test_wrong_length_is_refused_from_fstat(private_dir: Path, encoding: str, size: int, length: int) -> None:
    path = make_file(private_dir / "k", b"A" * length)
    with pytest.raises(KeyFileError) as info:
        read_key(path, size, encoding=encoding)
    assert info.value.strerror.startswith(f"wrong size: a {size}-byte key in {encoding} is ")
    assert info.value.strerror.endswith(f"and an optional newline, the file has {length} bytes")


def test_the_decoded_size_must_match(private_dir: Path) -> None:
    path = make_file(private_dir / "k", base64.b64encode(os.urandom(16)) + b"\n")
    with pytest.raises(KeyFileError, match="wrong size: a 32-byte key in base64 is 44 characters"):
        read_key(path, SIZE, encoding="base64")
    assert len(read_key(path, 16, encoding="base64")) == 16


def test_a_huge_text_file_is_refused_before_reading(private_dir: Path) -> None:
    path = private_dir / "huge"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o400)
    os.ftruncate(fd, 1 << 40)   # sparse: 1 TiB that would take hours to read
    os.close(fd)
    started = time.monotonic()
    for encoding in ("hex", "base64", "base64url"):
        with pytest.raises(KeyFileError, match="the file has 1099511627776 bytes"):
            read_key(path, SIZE, encoding=encoding)
    assert time.monotonic() - started < 5


def test_text_keys_obey_the_file_rules_too(private_dir: Path) -> None:
    loose = make_file(private_dir / "loose", base64.b64encode(os.urandom(SIZE)), 0o644)
    with pytest.raises(KeyFileError, match="permissions 0644"):
        read_key(loose, SIZE, encoding="base64")
    (private_dir / "link").symlink_to("loose")
    with pytest.raises(KeyFileError, match="refusing a symbolic link"):
        read_key(private_dir / "link", SIZE, encoding="base64")


def test_errors_leave_no_fd_and_no_buffer(private_dir: Path) -> None:
    good = make_file(private_dir / "good", base64.b64encode(os.urandom(SIZE)) + b"\n")
    bad = [make_file(private_dir / "inner", B64[:20] + b" " + B64[21:]),
           make_file(private_dir / "bits", B64[:-2] + b"B="),
           make_file(private_dir / "long", B64 + b"\n\n"),
           make_file(private_dir / "short", B64[:10])]
    gc.collect()
    fds, live = open_fds(), live_buffers()
    for i in range(2000):
        if i % 2:
            with pytest.raises(KeyFileError):
                read_key(bad[i % len(bad)], SIZE, encoding="base64")
        else:
            read_key(good, SIZE, encoding="base64").destroy()
    gc.collect()
    assert open_fds() == fds and live_buffers() == live


# The scratch a text key is read into: a subclass records each one, and what
# its memory holds once the read is over (test code may look; it is wiped).
SCRATCH = """
import ctypes, os
import securekeys.files as files
from securekeys import KeyFileError, SecureBuffer, read_key
scratches = []
class Recorded(SecureBuffer):
    def __init__(self, size):
        scratches.append(self)
files.SecureBuffer = Recorded
for name in ('good', 'inner', 'long'):
    try:
        key = read_key(os.path.join({directory!r}, name), 32, encoding='base64')
        print(name, 'read', key.state.name)
    except KeyFileError as e:
        print(name, 'refused')
for scratch in scratches:
    print(scratch.destroyed, ctypes.string_at(scratch._data_address(), scratch.size).count(0) == scratch.size)
"""


def test_the_scratch_is_wiped_whatever_happens(private_dir: Path) -> None:
    make_file(private_dir / "good", B64 + b"\n")
    make_file(private_dir / "inner", B64[:20] + b" " + B64[21:])
    make_file(private_dir / "long", B64[:-2] + b"AAA")   # the right length, one character too many
    result = run_python(SCRATCH.format(directory=str(private_dir)))
    assert result.stdout.decode().splitlines() == [
        "good read READONLY", "inner refused", "long refused", "True True", "True True", "True True"], result


# Search the whole of a process's memory for a key and its text after it
# read the key and destroyed it.  The needles are masked (XOR 0x5a) so that
# the search itself never holds them: a region is masked before it is searched.
SCAN = """
import os, re, sys
from securekeys import read_key
MASK = bytes(b ^ 0x5a for b in range(256))
needles = [bytes.fromhex(h) for h in {needles!r}]
key = read_key({path!r}, 32, encoding={encoding!r})
{between}
key.destroy()
del key
mem = os.open('/proc/self/mem', os.O_RDONLY)
found = [0] * len(needles)
with open('/proc/self/maps') as maps:
    regions = [line.split() for line in maps]
for region in regions:
    start, end = (int(x, 16) for x in region[0].split('-'))
    if len(region) > 5 and region[5] in ('[vvar]', '[vvar_vclock]', '[vsyscall]'):
        continue
    for at in range(start, end, 1 << 20):
        try:
            chunk = os.pread(mem, min(1 << 20, end - at), at).translate(MASK)
        except OSError:
            continue
        for i, needle in enumerate(needles):
            found[i] += chunk.count(needle)
print(*found)
"""


@pytest.mark.parametrize("encoding", ["raw", "hex", "base64", "base64url"])
def test_no_key_byte_and_no_text_reaches_ordinary_memory(private_dir: Path, encoding: str) -> None:
    raw = os.urandom(SIZE)
    text = raw if encoding == "raw" else ENCODE[encoding](raw) + b"\n"
    path = make_file(private_dir / "k", text)
    masked = [bytes(b ^ 0x5A for b in needle).hex() for needle in (raw, text.strip())]
    clean = run_python(SCAN.format(needles=masked, path=str(path), encoding=encoding, between=""))
    assert clean.stdout.decode() == "0 0\n", clean
    # The scan finds what is there: a copy made by `open().read()` is found.
    leak = f"leak = open({str(path)!r}, 'rb').read()"
    leaked = run_python(SCAN.format(needles=masked, path=str(path), encoding=encoding, between=leak))
    assert [int(n) for n in leaked.stdout.split()][1] >= 1, leaked
