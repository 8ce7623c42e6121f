"""The exceptions securekeys raises for bad input (misuse is fatal instead)."""

from __future__ import annotations

__all__ = ["KeyFileError"]


class KeyFileError(OSError):
    """A key file exists but is unsafe or malformed: wrong kind, owner,
    permissions or size.  ``filename`` names the file."""
