"""Every leaf config resolves exactly as recorded in tests/data/resolved_configs.json.

The leaves are diffs over `_base_` presets; moving a value between files must not change what any
leaf resolves to. The comparison is on canonical JSON text, so a tuple turning into a list, an int
into a float (0 vs 0.0) or a bool into an int fails too. Key order is not compared (sorted keys).

After an intended change of a resolved value, rewrite the snapshot and review its diff:
``python tests/test_config_snapshot.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clustvit.atomic import write_text_atomic
from clustvit.configs import PACKAGED, list_configs, load_config

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO / "tests/data/resolved_configs.json"


def canonical(value: Any) -> Any:
    """JSON-ready form of a resolved value that keeps tuples apart from lists (``{"__tuple__": [...]}``)."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [canonical(v) for v in value]}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"resolved config holds a {type(value).__name__}: {value!r}; expected JSON-like values")


def as_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def leaves() -> list[str]:
    """Every packaged leaf config, relative to the config folder (``config/`` in a checkout)."""
    return [str(p.relative_to(PACKAGED)) for p in list_configs()]


def resolve(name: str) -> Any:
    return canonical(load_config(PACKAGED / name))


RECORDED: dict[str, Any] = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.is_file() else {}


def test_snapshot_covers_the_paper_and_demo_leaves() -> None:
    # The leaves that existed when the snapshot was taken (later additions are covered by
    # tests/test_config.py::test_config_builds); none of them may disappear or be renamed.
    assert len(RECORDED) >= 39
    assert sorted(set(RECORDED) - set(leaves())) == []


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_leaf_resolves_as_recorded(name: str) -> None:
    assert as_text(resolve(name)) == as_text(RECORDED[name])


def test_canonical_text_tells_apart_what_equality_does_not() -> None:
    # Python's == calls 0 and 0.0 (or True and 1) equal; a resolved config that changed so must still fail.
    assert as_text(canonical({"a": 0})) != as_text(canonical({"a": 0.0}))
    assert as_text(canonical({"a": True})) != as_text(canonical({"a": 1}))
    assert as_text(canonical({"a": (1, 2)})) != as_text(canonical({"a": [1, 2]}))
    assert as_text(canonical({"b": 1, "a": 2})) == as_text(canonical({"a": 2, "b": 1}))


if __name__ == "__main__":
    snapshot = {name: resolve(name) for name in leaves()}
    write_text_atomic(SNAPSHOT, json.dumps(snapshot, sort_keys=True, indent=1) + "\n")
    print(f"{SNAPSHOT}: {len(snapshot)} leaves")
