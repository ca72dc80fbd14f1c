"""The one-line Python API: ``model = dynseg.load(config, checkpoint); mask = model.predict(rgb)``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .models.build import build_segmentor
from .models.segmentor import Segmentor
from .predictor import Predictor
from .visualize import distinct_colours

NO_CHECKPOINT = ("", "none", "None")  # the CLI spelling of "random weights"


def dataset_meta(data_cfg: dict | None, num_classes: int) -> tuple[tuple[str, ...], list[tuple[int, int, int]]]:
    """Class names and palette of the config's dataset (generated ones when unknown or mismatched)."""
    classes: Sequence[str] = ()
    palette: Sequence[Sequence[int]] = ()
    if data_cfg and data_cfg.get("type"):
        from .data import DATASETS, build_dataset

        cls = DATASETS.get(data_cfg["type"])
        classes, palette = (cls.classes, cls.palette) if cls is not None else ((), ())
        if cls is not None and not classes:  # generated datasets (Synthetic) set them per instance
            try:
                ds = build_dataset(data_cfg, "val")
                classes, palette = ds.classes, ds.palette
            except (ValueError, OSError):
                pass
    if len(classes) != num_classes or len(palette) < num_classes:
        return tuple(f"class{i}" for i in range(num_classes)), distinct_colours(num_classes)
    return tuple(classes), [tuple(int(v) for v in c) for c in palette[:num_classes]]


def build_model(cfg: dict, checkpoint: str | os.PathLike | None, device: str | torch.device = "cpu") -> Segmentor:
    """Build the config's segmentor and load ``checkpoint`` (ours or official) strictly; ``None``: random."""
    from .weights import load_checkpoint

    torch.manual_seed(0)  # random weights are then the same from run to run
    model = build_segmentor(cfg["model"])
    if checkpoint is None or str(checkpoint) in NO_CHECKPOINT:
        print("dynseg: no checkpoint given: the model has random weights", file=sys.stderr)
    else:
        load_checkpoint(model, checkpoint)
    return model.to(device).eval()


def resolve_config(config: str | os.PathLike | dict, cfg_options: Sequence[str] | None = None) -> dict[str, Any]:
    """A config path (with optional ``--cfg-options``) or an already resolved config dict."""
    if isinstance(config, dict):
        if cfg_options:
            raise ValueError("cfg_options only apply to a config file path")
        return config
    from .config import load_config

    return load_config(Path(config), list(cfg_options or []))


def load(
    config: str | os.PathLike | dict,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    amp: bool = False,
    cfg_options: Sequence[str] | None = None,
) -> Predictor:
    """Load a model for inference on your own images.

    Args:
        config: config file path (e.g. ``config/demo/segmenter_clustvit-demo_synthetic.py``) or a config dict.
        checkpoint: our checkpoint or an official one; ``None`` (or ``"none"``) keeps random weights.
        device: where to run.
        amp: mixed precision (bfloat16 on CPU, float16 on CUDA).
        cfg_options: ``key.path=value`` overrides of the config file.

    Returns:
        A ``Predictor``: ``predictor.predict(rgb_uint8 (H, W, 3)) -> (H, W) int64``.
    """
    cfg = resolve_config(config, cfg_options)
    model = build_model(cfg, checkpoint, device)
    classes, palette = dataset_meta(cfg.get("data"), model.num_classes)
    if not cfg.get("data"):
        return Predictor(model, None, True, classes, palette, amp)  # no test pipeline: images run as given
    from .data.build import build_pipeline

    test = build_pipeline(cfg["data"], "test")  # the config's resize, with TestPipeline's defaults filled in
    return Predictor(model, test.scale, test.keep_ratio, classes, palette, amp)
