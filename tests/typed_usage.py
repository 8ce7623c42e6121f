"""Typed usage of the public API: checked by `mypy --strict` in `make test`."""

from __future__ import annotations

import os
import tempfile

import securekeys
from securekeys import KeyFileError, KeyRing, Protection, SecureBuffer, SecureKey, create_key, destroy_key
from securekeys import read_credential, read_key, write_key
from securekeys.diagnostics import PageReport, page_report


def roundtrip(directory: str) -> bool:
    key: SecureKey = create_key(32)
    key.noaccess()
    path = os.path.join(directory, "key")
    write_key(path, key)
    loaded: SecureKey = read_key(path, 32)
    same: bool = loaded == key
    state: Protection = loaded.state
    report: PageReport = page_report(loaded)
    with loaded.reading() as view:
        first: int = view[0]
    destroy_key({"secret": key, "public": b"not secret"})
    loaded.destroy()
    return same and state is Protection.READONLY and report.mlocked and first >= 0


def scratch() -> int:
    with SecureBuffer(64) as buf:
        with buf.writing() as view:
            view[:4] = b"abcd"
        fd = os.open(os.devnull, os.O_RDONLY)
        try:
            count: int = buf.readinto(fd)
        finally:
            os.close(fd)
        return count + len(buf) + buf.size


def delivered(directory: str) -> int:
    key = create_key(32)
    write_key(os.path.join(directory, "text.key"), key, encoding="base64")
    text: SecureKey = read_key("text.key", 32, trust="root-managed", encoding="base64", beneath=directory)
    ring = KeyRing(32)
    ringed: SecureKey = ring.read_key("text.key", encoding="base64", beneath=directory, trust="strict")
    try:
        read_credential("service.key", 32, encoding="hex")
    except KeyFileError:
        pass
    return text.size + ringed.size


def encrypted(directory: str, passphrase: SecureBuffer) -> bool:
    from securekeys.crypto import DecryptionError, MEMLIMIT_SENSITIVE, OPSLIMIT_SENSITIVE
    key, kek = create_key(32), create_key(32)
    write_key(os.path.join(directory, "k.enc"), key, kek=kek)
    write_key(os.path.join(directory, "p.enc"), key, passphrase=passphrase,
              opslimit=OPSLIMIT_SENSITIVE, memlimit=MEMLIMIT_SENSITIVE)
    try:
        loaded: SecureKey = read_key("p.enc", 32, passphrase=passphrase, beneath=directory)
    except DecryptionError:
        return False
    return loaded == read_key(os.path.join(directory, "k.enc"), 32, kek=kek, trust="strict")


def handles_errors(path: str) -> str:
    try:
        read_key(path, 32)
    except KeyFileError as error:
        return str(error)
    except OSError as error:
        return f"os: {error}"
    return "ok"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(roundtrip(tmp), scratch(), delivered(tmp), handles_errors(tmp), securekeys.libsodium_version(),
              securekeys.get_include())
