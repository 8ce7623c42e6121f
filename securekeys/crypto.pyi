from types import TracebackType
from typing import Final, NamedTuple

from typing_extensions import Buffer, Self, disjoint_base

from securekeys._memory import SecureBuffer, SecureKey
from securekeys.errors import DecryptionError as DecryptionError
from securekeys.terminal import PASSWORD_MAX_BYTES as PASSWORD_MAX_BYTES
from securekeys.terminal import read_password as read_password

AEAD_KEY_BYTES: Final[int]
AEAD_NONCE_BYTES: Final[int]
AEAD_TAG_BYTES: Final[int]
ENCRYPT_OVERHEAD_BYTES: Final[int]
KDF_KEY_BYTES: Final[int]
KDF_CONTEXT_BYTES: Final[int]
MAC_KEY_BYTES: Final[int]
MAC_BYTES: Final[int]
SIGN_SEED_BYTES: Final[int]
SIGN_PUBLIC_KEY_BYTES: Final[int]
SIGN_SECRET_KEY_BYTES: Final[int]
SIGNATURE_BYTES: Final[int]
KX_PUBLIC_KEY_BYTES: Final[int]
KX_SECRET_KEY_BYTES: Final[int]
KX_SEED_BYTES: Final[int]
KX_SESSION_KEY_BYTES: Final[int]
BOX_PUBLIC_KEY_BYTES: Final[int]
BOX_SECRET_KEY_BYTES: Final[int]
BOX_SEED_BYTES: Final[int]
BOX_SEAL_BYTES: Final[int]
STREAM_KEY_BYTES: Final[int]
STREAM_HEADER_BYTES: Final[int]
STREAM_OVERHEAD_BYTES: Final[int]
PWHASH_SALT_BYTES: Final[int]
OPSLIMIT_MIN: Final[int]
OPSLIMIT_INTERACTIVE: Final[int]
OPSLIMIT_MODERATE: Final[int]
OPSLIMIT_SENSITIVE: Final[int]
OPSLIMIT_MAX: Final[int]
MEMLIMIT_MIN: Final[int]
MEMLIMIT_INTERACTIVE: Final[int]
MEMLIMIT_MODERATE: Final[int]
MEMLIMIT_SENSITIVE: Final[int]
MEMLIMIT_MAX: Final[int]

class SigningKeyPair(NamedTuple):
    public: bytes
    secret: SecureKey

class KxKeyPair(NamedTuple):
    public: bytes
    secret: SecureKey

class BoxKeyPair(NamedTuple):
    public: bytes
    secret: SecureKey

class SessionKeys(NamedTuple):
    rx: SecureKey
    tx: SecureKey

def aead_encrypt(
    key: SecureBuffer, plaintext: Buffer, nonce: Buffer, aad: Buffer | None = None
) -> bytes: ...
def aead_decrypt(
    key: SecureBuffer, ciphertext: Buffer, nonce: Buffer, aad: Buffer | None = None
) -> SecureBuffer: ...
def aead_decrypt_into(
    key: SecureBuffer, ciphertext: Buffer, nonce: Buffer, out: SecureBuffer, aad: Buffer | None = None
) -> int: ...
def _aead_decrypt_key(
    key: SecureBuffer, ciphertext: Buffer, nonce: Buffer, aad: Buffer | None, result: SecureKey
) -> None: ...
def encrypt(key: SecureBuffer, message: Buffer, aad: Buffer | None = b"") -> bytes: ...
def decrypt(key: SecureBuffer, sealed: Buffer, aad: Buffer | None = b"") -> SecureBuffer: ...
def decrypt_into(key: SecureBuffer, sealed: Buffer, out: SecureBuffer, aad: Buffer | None = b"") -> int: ...
def derive_key(master: SecureBuffer, subkey_id: int, context: Buffer, size: int = 32) -> SecureKey: ...
def mac(key: SecureBuffer, message: Buffer) -> bytes: ...
def mac_verify(key: SecureBuffer, message: Buffer, tag: Buffer) -> bool: ...
def keyed_hash(key: SecureBuffer, message: Buffer, size: int = 32) -> bytes: ...
def signing_keypair(seed: SecureBuffer | None = None) -> SigningKeyPair: ...
def sign(secret: SecureBuffer, message: Buffer) -> bytes: ...
def verify(public: Buffer, message: Buffer, signature: Buffer) -> bool: ...
def password_key(
    password: SecureBuffer,
    salt: Buffer,
    size: int = 32,
    *,
    opslimit: int = ...,
    memlimit: int = ...,
) -> SecureKey: ...
def kx_keypair(seed: SecureBuffer | None = None) -> KxKeyPair: ...
def kx_client_session_keys(client: KxKeyPair, server_public: Buffer) -> SessionKeys: ...
def kx_server_session_keys(server: KxKeyPair, client_public: Buffer) -> SessionKeys: ...
def box_keypair(seed: SecureBuffer | None = None) -> BoxKeyPair: ...
def box_seal(public: Buffer, message: Buffer) -> bytes: ...
def box_seal_open(pair: BoxKeyPair, sealed: Buffer) -> SecureBuffer: ...

@disjoint_base
class _Stream:
    def rekey(self) -> None: ...
    @property
    def finished(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

@disjoint_base
class StreamEncryptor(_Stream):
    @property
    def header(self) -> bytes: ...
    def __init__(self, key: SecureBuffer) -> None: ...
    def push(self, message: Buffer, *, aad: Buffer | None = b"", final: bool = False) -> bytes: ...

class StreamDecryptor(_Stream):
    def __init__(self, key: SecureBuffer, header: Buffer) -> None: ...
    def pull(self, ciphertext: Buffer, *, aad: Buffer | None = b"") -> tuple[SecureBuffer, bool]: ...
    def pull_into(
        self, ciphertext: Buffer, out: SecureBuffer, *, aad: Buffer | None = b""
    ) -> tuple[int, bool]: ...
