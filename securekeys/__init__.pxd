# The public cimport API: `from securekeys cimport SecureBuffer, SecureKey`.
# See "Using securekeys from Cython" in the README for the contract.
from securekeys._memory cimport (
    SecureBuffer, SecureKey,
    SK_NOACCESS, SK_READONLY, SK_READWRITE, SK_DESTROYED,
)
