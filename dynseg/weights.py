"""Moved to ``dynseg.convert.weights``; this name stays only until README's example imports the new one."""

from .convert.weights import *  # noqa: F403
from .convert.weights import CheckpointError, load_checkpoint, to_official  # noqa: F401 - the names README uses
