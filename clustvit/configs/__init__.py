"""Configs: the packaged ones (the seed's experiments, ``_base_`` presets, the demo) and their loading.

A config is a Python file whose public top-level names are the config (``model = dict(...)``), stating a
diff over the ``_base_`` presets it names. ``load_config(NAME)`` takes a file path, a checkout path as
the seed writes it (``config/clustvit/others/LEAF.py``) or a bare leaf name, from any folder:
every config ships inside the package (``find_config``).
"""

from __future__ import annotations

import os

from clustvit.configs.loader import (
    PACKAGED,
    Config,
    Origins,
    config_to_text,
    find_config,
    list_configs,
    load_raw,
    parse_overrides,
    save_config,
)
from clustvit.configs.schema import validate_config
from clustvit.errors import ConfigError


def load_config(path: str | os.PathLike, overrides: list[str] | None = None, validate: bool = True) -> Config:
    """Loads a config with its `_base_` chain, applies overrides and validates it.

    Args:
        path: the leaf config: a file, a packaged config path or name (``find_config``).
        overrides: ``--cfg-options`` strings (``a.b=c``).
        validate: check every key and value against the schema (``clustvit.configs.schema``).

    Returns:
        The resolved config: a plain nested dict.
    """
    cfg, origins = load_raw(path, overrides)
    if validate:
        validate_config(cfg, origins)
    return cfg


__all__ = ["PACKAGED", "Config", "ConfigError", "Origins", "config_to_text", "find_config", "list_configs",
           "load_config", "parse_overrides", "save_config", "validate_config"]
