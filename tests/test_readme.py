"""The README's Python examples run as written, and its first lines give the two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_first_lines_are_the_two_setup_commands():
    head = README.read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head) and any(line.startswith("make test") for line in head)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_example_runs(index: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(README.parent)
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})
