"""The one-line Python API: ``model = clustvit.load(config, checkpoint); mask = model.predict(rgb)``."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from clustvit.data import DATASETS, build_dataset
from clustvit.data.build import build_pipeline
from clustvit.inference.predictor import Predictor
from clustvit.loading import NO_CHECKPOINT, build_model, load_model, resolve_config  # noqa: F401 - re-exported
from clustvit.viz.draw import distinct_colours


def dataset_meta(data_cfg: dict | None, num_classes: int) -> tuple[tuple[str, ...], list[tuple[int, int, int]]]:
    """Class names and palette of the config's dataset (generated ones when unknown or mismatched)."""
    classes: Sequence[str] = ()
    palette: Sequence[Sequence[int]] = ()
    if data_cfg and data_cfg.get("type"):
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


def load(
    config: str | os.PathLike | dict,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    amp: bool = False,
    cfg_options: Sequence[str] | None = None,
    accel: bool = True,
) -> Predictor:
    """Load a model for inference on your own images.

    Args:
        config: config file path (e.g. ``config/demo/segmenter_clustvit-demo_synthetic.py``), a config dict,
            a zoo name (``clustvit zoo list``: downloaded once, with its class map) or a hub-style
            folder (``clustvit.save_pretrained``).
        checkpoint: our checkpoint or an official one; ``None`` (or ``"none"``) keeps random weights after a
            config, and takes the zoo entry's / folder's own weights after a name or folder.
        device: where to run.
        amp: mixed precision in ``clustvit.accel.amp_dtype(device)`` (bfloat16; float16 on GPUs without it).
        cfg_options: ``key.path=value`` overrides of the config file.
        accel: run on the device's fast kernels (``clustvit.accel.accelerate``); False keeps the plain model.

    Returns:
        A ``Predictor``: ``predictor.predict(rgb_uint8 (H, W, 3)) -> (H, W) int64``.
    """
    model, cfg = load_model(config, checkpoint, cfg_options, device, map_classes=True)
    classes, palette = dataset_meta(cfg.get("data"), model.num_classes)
    if not cfg.get("data"):
        return Predictor(model, None, True, classes, palette, amp, accel)  # no test pipeline: images run as given

    test = build_pipeline(cfg["data"], "test")  # the config's resize, with TestPipeline's defaults filled in
    return Predictor(model, test.scale, test.keep_ratio, classes, palette, amp, accel)
