"""The one model loader: a config (file or dict) plus a checkpoint -> a segmentor in eval mode.

``dynseg.load``, ``test.py`` and every tool build their model here, so a checkpoint of any supported
format (ours, official mmseg, a hub-style folder) loads the same way everywhere: converted, strictly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .models.segmentor import Segmentor

NO_CHECKPOINT = ("", "none", "None")  # the CLI spelling of "random weights"


def no_checkpoint(checkpoint: str | os.PathLike | None) -> bool:
    """True for ``None`` and the CLI spellings of "random weights" (``none``, empty)."""
    return checkpoint is None or str(checkpoint) in NO_CHECKPOINT


def resolve_config(config: str | os.PathLike | dict, cfg_options: Sequence[str] | None = None) -> dict[str, Any]:
    """A config path (with optional ``--cfg-options``) or an already resolved config dict."""
    if isinstance(config, dict):
        if cfg_options:
            raise ValueError("cfg_options only apply to a config file path")
        return config
    from .config import load_config

    return load_config(Path(config), list(cfg_options or []))


def build_model(
    cfg: dict, checkpoint: str | os.PathLike | None, device: str | torch.device = "cpu", seed: int = 0
) -> Segmentor:
    """Build the config's segmentor and load ``checkpoint`` (any supported format) strictly.

    ``checkpoint`` ``None`` / ``"none"``: random weights, seeded with ``seed`` so they are the same from
    run to run (a note goes to stderr). The config's ImageNet ``pretrained`` URL is never fetched here:
    it only initialises training.
    """
    from .convert.weights import load_checkpoint
    from .models.build import build_segmentor

    torch.manual_seed(seed)
    model = build_segmentor({**cfg["model"], "pretrained": None})
    if no_checkpoint(checkpoint):
        print("dynseg: no checkpoint given: the model has random weights", file=sys.stderr)
    else:
        load_checkpoint(model, checkpoint)
    return model.to(device).eval()


def load_model(
    config: str | os.PathLike | dict,
    checkpoint: str | os.PathLike | None = None,
    cfg_options: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[Segmentor, dict[str, Any]]:
    """(segmentor in eval mode, resolved config) of a config file / dict and a checkpoint."""
    cfg = resolve_config(config, cfg_options)
    return build_model(cfg, checkpoint, device, seed), cfg
