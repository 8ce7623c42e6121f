"""The README's Python examples run as written: each ```python block in a
fresh interpreter, in an empty directory of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import run_python

README = Path(__file__).resolve().parent.parent / "README.md"

# The blocks whose first line names a file ("# setup.py") are the files of the
# Cython example project, which tests/test_cython.py builds and runs.
PROJECT_FILE = re.compile(r"# ([\w-]+\.py)\n")


def python_blocks() -> list[tuple[str, str]]:
    """(section heading, code) of every ```python block, in order."""
    blocks = []
    section = "intro"
    # Every fenced block is matched whole, so that its "# comment" lines are
    # never taken for headings.
    for language, code, heading in re.findall(r"^```([\w-]*)\n(.*?)^```$|^#{1,6} (.*?)$",
                                              README.read_text(encoding="utf-8"), re.S | re.M):
        if heading:
            section = heading
        elif language == "python":
            blocks.append((section, code))
    return blocks


STANDALONE = [(section, code) for section, code in python_blocks()
              if not PROJECT_FILE.match(code)]


@pytest.mark.parametrize("code", [code for _, code in STANDALONE],
                         ids=[re.sub(r"\W+", "-", section).strip("-")
                              for section, _ in STANDALONE])
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    result = run_python(code, cwd=str(tmp_path))
    assert result.returncode == 0, (code, result.stderr.decode())
    for key_file in tmp_path.glob("*.key"):
        assert key_file.stat().st_mode & 0o777 == 0o400, key_file


def test_every_python_block_is_run() -> None:
    project = [PROJECT_FILE.match(code) for _, code in python_blocks()]
    assert sorted(m.group(1) for m in project if m) == ["example.py", "setup.py"]
    sections = {section for section, _ in STANDALONE}
    assert {"securekeys", "Key files", "Crypto in place: `securekeys.crypto`",
            "Many keys: `KeyRing`"} <= sections, sections


def test_readme_states_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
