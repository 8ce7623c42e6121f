"""libsodium declarations for Cython (``from securekeys.includes cimport sodium``)."""
