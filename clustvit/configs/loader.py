"""Python config files: `_base_` inheritance, `--cfg-options` overrides, strict keys, saving.

A config is a Python file whose public top-level names are the config (``model = dict(...)``).
``_base_`` (a path or a list of paths, relative to the file) names presets that are loaded first;
the file's own dicts are then merged into them key by key. A dict holding ``_delete_=True``
replaces the inherited value instead of merging into it. Files are loaded by path (leaf names hold
hyphens, so they are not importable modules).

Every key remembers the file that introduced it, so that the strict-key validation in
``clustvit.configs.schema`` can name the culprit file.
"""

from __future__ import annotations

import ast
import copy
import os
import pprint
import runpy
import types
from pathlib import Path
from typing import Any

from clustvit.atomic import write_json_atomic, write_text_atomic
from clustvit.errors import ConfigError

Config = dict[str, Any]
# (key, key, ...) -> the file (or "--cfg-options") that introduced that key.
Origins = dict[tuple[str, ...], str]
# The configs that ship in the package (the checkout's ``config/`` points here).
PACKAGED = Path(__file__).resolve().parent


def _read_file(path: Path) -> tuple[Config, list[Path]]:
    """Executes one config file and returns its public names and its `_base_` paths."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        ns = runpy.run_path(str(path))
    except Exception as e:  # a syntax or name error in a user's file: say which file
        raise ConfigError(f"{path}: cannot execute config file: {type(e).__name__}: {e}") from e
    bases = ns.get("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list | tuple) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a str or a list of str, got {bases!r}")
    body = {
        k: v
        for k, v in ns.items()
        if not k.startswith("_") and not isinstance(v, types.ModuleType | types.FunctionType | type)
    }
    return body, [_base_path(path, b) for b in bases]


def _base_path(path: Path, base: str) -> Path:
    """A `_base_` entry: relative to the file that names it, else a packaged config (``find_config``), so
    a user's own config outside the package can inherit ``_base_/models/segmenter_vit-b16.py`` or a leaf."""
    local = (path.parent / base).resolve()
    if local.is_file():
        return local
    try:
        return find_config(base)
    except ConfigError:
        raise ConfigError(f"{path}: _base_ file not found: {base} (neither beside this file nor a packaged "
                          "config)") from None


def _merge(dst: Config, src: Config, origins: Origins, source: str, prefix: tuple[str, ...] = ()) -> None:
    """Merges `src` into `dst` in place; dicts recurse unless `src` says `_delete_=True`."""
    for key, value in src.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            value = dict(value)
            replace = bool(value.pop("_delete_", False))
            if replace or not isinstance(dst.get(key), dict):
                # Forget the origins of whatever the replaced value held.
                for p in [p for p in origins if p[: len(path)] == path]:
                    del origins[p]
                dst[key] = {}
            origins.setdefault(path, source)
            _merge(dst[key], value, origins, source, path)
        else:
            for p in [p for p in origins if p[: len(path)] == path and p != path]:
                del origins[p]
            dst[key] = copy.deepcopy(value)
            origins[path] = source


def _load(path: Path, origins: Origins, stack: tuple[Path, ...]) -> Config:
    if path in stack:
        raise ConfigError(f"{path}: circular _base_ chain {' -> '.join(map(str, stack))}")
    body, bases = _read_file(path)
    cfg: Config = {}
    for base in bases:
        _merge(cfg, _load(base, origins, (*stack, path)), {}, str(base))
    # Origins of the bases were recorded by the recursive calls; record this file's own keys.
    _merge(cfg, body, origins, str(path))
    return cfg


def find_config(name: str | os.PathLike) -> Path:
    """The config file a name stands for, in this order:

    * an existing file (a user's own config, or a checkout's ``config/...`` path);
    * a packaged config by its path in the checkout (``config/clustvit/others/LEAF.py``, as the seed writes
      it) or below the package's config folder (``_base_/models/segmenter_vit-b16.py``);
    * a packaged leaf config by its bare name, with or without ``.py``
      (``segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3``).

    Raises:
        ConfigError: none of these, in one line.
    """
    path = Path(name)
    if path.is_file():
        return path.resolve()
    parts = path.parts
    tails = [parts[i + 1 :] for i, part in enumerate(parts) if part in ("config", "configs")] + [parts]
    for tail in tails:
        if tail and not Path(*tail).is_absolute() and (PACKAGED / Path(*tail)).is_file():
            return (PACKAGED / Path(*tail)).resolve()
    stem = path.name.removesuffix(".py")
    if len(parts) == 1:
        matches = [p for p in list_configs() if p.stem == stem]
        if len(matches) == 1:
            return matches[0]
    raise ConfigError(f"{name}: config file not found (a file, a packaged config path such as "
                      "config/clustvit/others/NAME.py, or a name from `clustvit configs`)")


def list_configs() -> list[Path]:
    """Every packaged leaf config (the seed's experiments and the demo), sorted; ``_base_`` presets excluded."""
    return sorted(p for p in PACKAGED.rglob("*.py") if p.parent != PACKAGED and "_base_" not in p.relative_to(PACKAGED).parts)


def load_raw(path: str | os.PathLike, overrides: list[str] | None = None) -> tuple[Config, Origins]:
    """A config file (``find_config`` resolves the name) with its `_base_` chain and overrides applied,
    unvalidated, and the file that introduced each key."""
    origins: Origins = {}
    cfg = _load(find_config(path), origins, ())
    if overrides:
        _merge(cfg, parse_overrides(overrides), origins, "--cfg-options")
    return cfg, origins


def parse_overrides(items: list[str]) -> Config:
    """Turns ``["a.b=1", "c=[1, 2]"]`` into a nested dict; values are Python literals when possible.

    Args:
        items: ``key.path=value`` strings as given to ``--cfg-options``.

    Returns:
        A nested dict to merge over the config.
    """
    out: Config = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--cfg-options: expected key.path=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word such as ADE20K stays a string
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--cfg-options: {key} conflicts with another override")
        node[leaf] = value
    return out


def config_to_text(cfg: Config) -> str:
    """Renders a resolved config as a Python config file (no `_base_`: everything inline)."""
    lines = ["# Resolved config written by clustvit: every value, no _base_.", ""]
    for key, value in cfg.items():
        lines.append(f"{key} = {pprint.pformat(value, sort_dicts=False, width=100)}")
    return "\n".join(lines) + "\n"


def save_config(cfg: Config, work_dir: str | os.PathLike) -> None:
    """Writes ``config.py`` and ``config.json`` (the resolved config) into `work_dir`, atomically."""
    work = Path(work_dir)  # the atomic writes create it if needed
    write_text_atomic(work / "config.py", config_to_text(cfg), fsync=True)
    write_json_atomic(work / "config.json", cfg, fsync=True)
