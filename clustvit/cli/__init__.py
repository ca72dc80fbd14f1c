"""Shared CLI entry: expected failures (bad config, data or checkpoint) end in one line and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def run(main: Callable[[], Any]) -> None:
    """Call ``main``; a ValueError / FileNotFoundError (ConfigError, DatasetError and CheckpointError are
    ValueErrors) prints ``error: <message>`` on stderr and exits 2 instead of a traceback."""
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
