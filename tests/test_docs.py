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


DOCS = [README, README.parent / "docs" / "ARCHITECTURE.md"]
# `clustvit.x.y` names and repository paths (clustvit/..., tools/..., config/..., docs/..., tests/...) in the docs.
NAME = re.compile(r"\bdynseg(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
PATH = re.compile(r"\b(?:clustvit|tools|config|docs|tests)/[A-Za-z0-9_./{},*-]*[A-Za-z0-9_}]")


def expand(path: str) -> list[str]:
    """``clustvit/models/heads/{segmenter,upernet}.py`` -> both paths."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in expand(path[: m.start()] + alt + path[m.end():])]


def resolves(name: str) -> bool:
    """An importable module, or an attribute reachable from the longest importable prefix."""
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_name_and_path_in_the_docs_exists(doc: Path):
    text = doc.read_text()
    names = sorted({n for n in NAME.findall(text) if not n.endswith(".py")})
    paths = sorted({p for raw in PATH.findall(text) for p in expand(raw.rstrip("."))})
    missing = [n for n in names if not resolves(n)]
    missing += [p for p in paths if not (any(README.parent.glob(p)) if "*" in p else (README.parent / p).exists())]
    assert missing == [], f"{doc.name} names what does not exist: {missing}"


def test_architecture_table_names_only_what_each_file_defines():
    """In docs/ARCHITECTURE.md's file table, every `identifier` on a file's row is defined in that file."""
    missing = []
    for row in (README.parent / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        cells = row.split("|")
        if len(cells) < 3 or not re.fullmatch(r"\s*`(clustvit/[^`]+\.py)`\s*", cells[1]):
            continue
        source = (README.parent / cells[1].strip(" `")).read_text()
        for ident in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:\([^`]*\))?`", "|".join(cells[2:])):
            if not re.search(rf"^\s*(?:def|class) {ident}\b|^{ident}\b.*=", source, re.M):
                missing.append(f"{cells[1].strip()}: {ident}")
    assert missing == []
