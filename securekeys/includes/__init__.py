"""C declarations for Cython: libsodium (``from securekeys.includes cimport sodium``),
the Argon2 reference library (``argon2``) and Linux calls (``system``)."""
