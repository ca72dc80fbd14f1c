"""The docs say only what is true, and the README's examples run.

For README.md and every docs/*.md: each ``clustvit.x.y`` name imports, each repository path and relative
link exists, each ``clustvit COMMAND [SUBCOMMAND]`` in code is a real command, each ``--flag`` after a
``clustvit`` command (or after a seed script, ``python train.py`` / ``test.py`` / ``tools/X.py``, which run
a ``clustvit`` command through ``clustvit.cli.seed_shim``) is accepted by that command, and each
``CLUSTVIT_*`` environment variable is read somewhere in the code. docs/ARCHITECTURE.md's file table names
every module of the package and, on each file's row, only what that file defines.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from functools import cache
from pathlib import Path

import pytest

from clustvit.cli import COMMANDS, _top_parser, command_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)

# `clustvit.x.y` names; repository paths; markdown links; environment variables.
NAME = re.compile(r"(?<![\w./-])clustvit(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
PATH = re.compile(r"(?<![\w./-])(?:clustvit|tools|config|docs|tests)/[A-Za-z0-9_./{},*-]*[A-Za-z0-9_}*]")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
ENV = re.compile(r"\bCLUSTVIT_[A-Z0-9_]*[A-Z0-9]\b")
FILE_SUFFIXES = (".py", ".md", ".json", ".pth", ".onnx", ".png", ".sh")
# Commands in code: `clustvit ARGS`, or a seed script `python [tools/]X.py ARGS` (also under torchrun).
COMMAND = re.compile(r"(?<![\w./-])(?<!from )(?<!import )clustvit[ \t]+(?P<args>.*)")
SCRIPT = re.compile(r"\b(?:python3?|torchrun)\b[^`\n]*?[ \t](?P<script>(?:tools/)?[a-z_]+\.py)(?:[ \t]+(?P<args>.*))?")
END = re.compile(r"`|(?:^|\s)#|&&|;|\s\|\s|\bclustvit[ \t]|\b(?:python3?|torchrun)\b")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]*\b")


# ---------------------------------------------------------------------------------------------- helpers
def expand(path: str) -> list[str]:
    """``clustvit/models/heads/{segmenter,upernet}.py`` -> both paths."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in expand(path[: m.start()] + alt.strip() + path[m.end():])]


def path_exists(path: str, root: Path = REPO) -> bool:
    """A file or folder below ``root``; ``*`` and UPPER-CASE placeholders (``NAME.py``) match any name."""
    if "*" not in path and (root / path).exists():
        return True
    pattern = PLACEHOLDER.sub("*", path)
    return "*" in pattern and any(root.glob(pattern))


def resolves(name: str) -> bool:
    """An importable module, or an attribute reachable from the longest importable prefix."""
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


def code_lines(text: str) -> list[str]:
    """The code in a markdown text: every line of the fenced blocks (backslash continuations joined), then
    every inline code span."""
    lines = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return lines + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A command group's subcommand parsers ({} for a plain command)."""
    return {name: sub for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for name, sub in a.choices.items()}


@cache
def parser_of(name: str) -> argparse.ArgumentParser | str:
    """The command's parser, or why it cannot be built."""
    try:
        return command_parser(name)
    except Exception as e:  # a command module missing or broken: reported as a doc problem
        return f"{type(e).__name__}: {e}"


@cache
def seed_commands(script: str) -> tuple[tuple[str, ...], ...]:
    """The ``clustvit`` commands a seed script runs: its ``seed_shim("bench", "fps")`` call, or the leading
    words of ``clustvit([...])`` / ``main([...])`` lists (a script that picks the subcommand itself)."""
    found = []
    for node in ast.walk(ast.parse((REPO / script).read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        if node.func.id == "seed_shim":
            args = node.args
        elif node.func.id in ("clustvit", "main") and node.args and isinstance(node.args[0], ast.List):
            args = node.args[0].elts
        else:
            continue
        words = []
        for arg in args:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                break
            words.append(arg.value)
        if words:
            found.append(tuple(words))
    return tuple(found)


@cache
def code_text() -> str:
    """Every Python file of the package and the tests (this one excluded: it names fakes on purpose)."""
    files = [*(REPO / "clustvit").rglob("*.py"), *(REPO / "tests").rglob("*.py")]
    return "\n".join(p.read_text() for p in files if p.resolve() != Path(__file__).resolve())


def alternatives(word: str) -> list[str]:
    """``{fps,flops}`` or ``fps|flops`` -> ["fps", "flops"]; ``fps`` -> ["fps"]."""
    return [w for w in re.split(r"[{},|\s]+", word) if w]


def check_command(words: list[str], flags: list[str], where: str) -> list[str]:
    """Problems of one ``clustvit WORDS...`` with ``flags`` after it."""
    if not words or words[0].startswith("-"):
        unknown = [f for f in flags if f not in options(_top_parser())]
        return [f"{where}: `clustvit` does not accept {f}" for f in unknown]
    if PLACEHOLDER.fullmatch(words[0]):
        return []
    problems, parsers = [], []
    for name in alternatives(words[0]):
        parser = parser_of(name) if name in COMMANDS else None
        if parser is None:
            problems.append(f"{where}: `clustvit {name}` is not a command (clustvit.cli.COMMANDS)")
            continue
        if isinstance(parser, str):
            problems.append(f"{where}: `clustvit {name}`: its parser cannot be built ({parser})")
            continue
        subs = subcommands(parser)
        sub = words[1] if len(words) > 1 else None
        if not subs or sub is None or sub.startswith("-") or PLACEHOLDER.fullmatch(sub) or sub == "...":
            parsers += [parser, *subs.values()] if subs and (sub is None or PLACEHOLDER.fullmatch(sub)) else [parser]
            continue
        for s in alternatives(sub):
            if s in subs:
                parsers.append(subs[s])
            else:
                problems.append(f"{where}: `clustvit {name} {s}` is not a subcommand (choices: {', '.join(subs)})")
    accepted = set().union(*map(options, parsers)) if parsers else None
    if accepted is not None:
        problems += [f"{where}: `clustvit {' '.join(words[:2])}` does not accept {f}" for f in flags if f not in accepted]
    return problems


def split_args(args: str) -> tuple[list[str], list[str]]:
    """The command's leading words (subcommand, braces kept whole) and every --flag up to the next command,
    comment or shell operator."""
    args = END.split(args, maxsplit=1)[0]
    words = re.findall(r"\{[^}]*\}|\S+", args)
    return words[:2], FLAG.findall(args)


def command_problems(text: str) -> list[str]:
    problems = []
    for line in code_lines(text):
        for m in COMMAND.finditer(line):
            words, flags = split_args(m.group("args"))
            problems += check_command(words, flags, repr(line.strip()))
        for m in SCRIPT.finditer(line):
            script, (_, flags) = m.group("script"), split_args(m.group("args") or "")
            where = repr(line.strip())
            if not (REPO / script).is_file():
                problems.append(f"{where}: {script} does not exist")
                continue
            commands, source = seed_commands(script), (REPO / script).read_text()
            for command in commands:
                problems += check_command(list(command), [], where)
            # A flag the script handles itself (`--merge` picks a subcommand), or one its command accepts.
            problems += [f"{where}: {script} does not accept {f}" for f in flags if f'"{f}"' not in source
                         and not any(check_command(list(c), [f], where) == [] for c in commands)]
    return problems


def doc_problems(text: str, folder: Path = REPO) -> list[str]:
    """Everything a doc names that does not exist; ``folder`` is the doc's own (for relative links)."""
    names = sorted({n for n in NAME.findall(text) if not n.endswith(FILE_SUFFIXES)})
    problems = [f"{n}: does not import" for n in names if not resolves(n)]
    paths = sorted({p for raw in PATH.findall(text) for p in expand(raw.rstrip("."))})
    problems += [f"{p}: no such path" for p in paths if not path_exists(p)]
    links = sorted({link for link in LINK.findall(text) if not re.match(r"[a-z]+:", link)})
    problems += [f"{link}: broken link" for link in links if not (folder / link).exists()]
    problems += [f"{v}: read nowhere in clustvit/ or tests/" for v in sorted(set(ENV.findall(text)))
                 if v not in code_text()]
    return problems + command_problems(text)


# ---------------------------------------------------------------------------------------------- tests
def test_first_lines_are_the_two_setup_commands():
    head = README.read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head) and any(line.startswith("make test") for line in head)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_example_runs(index: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO)
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_everything_the_docs_name_exists(doc: Path):
    problems = doc_problems(doc.read_text(), doc.parent)
    assert problems == [], "\n".join(problems)


def test_the_checks_catch_what_does_not_exist():
    fake = """
Run `clustvit frobnicate`, then `clustvit bench nosuchbench`, or `clustvit train CONFIG --no-such-flag`.
```bash
python train.py CONFIG --bogus-flag
clustvit weights split CKPT --out-dir D --wrong-one   # a comment: --ignored
```
Set `CLUSTVIT_NOT_A_VARIABLE=1`, see `tools/not_there.py` and [a link](img/none.png); `clustvit.models.nothing`.
"""
    found = "\n".join(doc_problems(fake, REPO / "docs"))
    for wrong in ("clustvit frobnicate", "nosuchbench", "--no-such-flag", "--bogus-flag", "--wrong-one",
                  "CLUSTVIT_NOT_A_VARIABLE", "tools/not_there.py", "img/none.png", "clustvit.models.nothing"):
        assert wrong in found, wrong
    assert "accept --ignored" not in found and "accept --out-dir" not in found
    good = "`clustvit train CONFIG --work-dir D --resume`, `python test.py CONFIG CKPT --show-dir V`, " \
           "`clustvit.models.oracle.oracle_logits`, `config/clustvit/others/NAME.py`, `tests/test_docs.py`"
    assert doc_problems(good) == []


def test_architecture_table_names_every_module_and_only_what_each_file_defines():
    """Every module of the package has a row or a mention in docs/ARCHITECTURE.md; every `identifier` on a
    file's row is defined in that file."""
    text = ARCHITECTURE.read_text()
    named = {p.rstrip("/") for raw in PATH.findall(text) for p in expand(raw)}
    package = REPO / "clustvit"
    modules = [p.relative_to(REPO).as_posix() for p in sorted(package.rglob("*.py"))
               if not (p.relative_to(package).parts[0] == "configs" and len(p.relative_to(package).parts) > 2)]
    unnamed = [m for m in modules if m not in named
               and not (m.endswith("/__init__.py") and any(n.startswith(m.rsplit("/", 1)[0]) for n in named))]
    assert unnamed == [], f"modules docs/ARCHITECTURE.md does not name: {unnamed}"
    missing = []
    for row in text.splitlines():
        cells = row.split("|")
        if len(cells) < 3 or not re.fullmatch(r"\s*`(clustvit/[^`]+\.py)`\s*", cells[1]):
            continue
        source = (REPO / cells[1].strip(" `")).read_text()
        for ident in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:\([^`]*\))?`", "|".join(cells[2:])):
            if not re.search(rf"^\s*(?:def|class) {ident}\b|^{ident}\b.*=", source, re.M):
                missing.append(f"{cells[1].strip()}: {ident}")
    assert missing == [], f"identifiers not defined where the table says: {missing}"
