"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_python

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.S | re.M)


def test_first_example_and_crypto_example_run(tmp_path: Path) -> None:
    blocks = python_blocks()
    intro = blocks[0]
    crypto = next(b for b in blocks if "securekeys.crypto" in b)
    for code in (intro, crypto):
        result = run_python(code, cwd=str(tmp_path))
        assert result.returncode == 0, (code, result.stderr)
    assert (tmp_path / "app.key").stat().st_mode & 0o777 == 0o400


def test_readme_states_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
