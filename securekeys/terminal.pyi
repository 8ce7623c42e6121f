from typing import Final

from securekeys._memory import SecureBuffer

PASSWORD_MAX_BYTES: Final[int]

def read_password(prompt: str = "Password: ") -> SecureBuffer: ...
