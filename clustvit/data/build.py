"""``build_dataset(data_cfg, split)`` and ``collate``: the only place that reads the ``data`` config.

Schema of ``data_cfg`` (the config's ``data`` dict; unknown keys are an error)::

    data = dict(
        type="ADE20K",                    # a key of DATASETS
        root="data/ade/ADEChallengeData2016",
        train_pipeline=dict(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True,
                            crop_size=(512, 512), cat_max_ratio=0.75, flip_prob=0.5, photometric=True),
        test_pipeline=dict(scale=(2048, 512), keep_ratio=True),
        batch_size=8, num_workers=2, val_batch_size=1,
        dataset_kwargs=dict(),            # extra constructor arguments of the dataset class
    )
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence

import torch

from clustvit.data.base import Pipeline, SegDataset
from clustvit.data.datasets import ADE20K, SUIM, RumexWeeds
from clustvit.data.folder import Folder
from clustvit.data.synthetic import Synthetic
from clustvit.data.transforms import IGNORE_INDEX, TestPipeline, TrainPipeline

DATASETS: dict[str, type[SegDataset]] = {
    "ADE20K": ADE20K,
    "SUIM": SUIM,
    "RumexWeeds": RumexWeeds,
    "Synthetic": Synthetic,
    "Folder": Folder,  # your own labelled folder (clustvit/data/folder.py)
}

DATA_KEYS = {"type", "root", "train_pipeline", "test_pipeline", "batch_size", "num_workers",
             "val_batch_size", "dataset_kwargs"}


def _pair(value: object, key: str, kind: type | tuple[type, ...]) -> tuple:
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, kind) and not isinstance(v, bool) and v > 0 for v in value)):
        what = "ints" if kind is int else "numbers"
        raise ValueError(f"data.{key}={value!r}: expected a pair of positive {what}")
    return tuple(value)


def _pipeline_kwargs(cfg: object, cls: type, key: str) -> dict:
    """Check one pipeline dict against the dataclass fields of ``cls`` and normalise its values."""
    fields = {f.name for f in dataclasses.fields(cls)} - {"resizes_mask"}
    if not isinstance(cfg, dict):
        raise ValueError(f"data.{key} must be a dict, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise ValueError(f"data.{key}: unknown key {unknown[0]!r}, expected some of {sorted(fields)}")
    kw = dict(cfg)
    if "scale" in kw:
        kw["scale"] = _pair(kw["scale"], f"{key}.scale", int)
    if "crop_size" in kw:
        kw["crop_size"] = _pair(kw["crop_size"], f"{key}.crop_size", int)
    if kw.get("ratio_range") is not None:
        lo, hi = _pair(kw["ratio_range"], f"{key}.ratio_range", (int, float))
        if lo > hi:
            raise ValueError(f"data.{key}.ratio_range={kw['ratio_range']!r}: expected low <= high")
        kw["ratio_range"] = (float(lo), float(hi))
    if "cat_max_ratio" in kw and not 0.0 < kw["cat_max_ratio"] <= 1.0:
        raise ValueError(f"data.{key}.cat_max_ratio={kw['cat_max_ratio']!r}: expected 0 < r <= 1")
    if "flip_prob" in kw and not 0.0 <= kw["flip_prob"] <= 1.0:
        raise ValueError(f"data.{key}.flip_prob={kw['flip_prob']!r}: expected 0 <= p <= 1")
    return kw


def validate_data_cfg(data_cfg: dict) -> None:
    """Raise a one-line ValueError naming the first bad key of ``data_cfg``."""
    if not isinstance(data_cfg, dict):
        raise ValueError(f"data config must be a dict, got {type(data_cfg).__name__}")
    unknown = sorted(set(data_cfg) - DATA_KEYS)
    if unknown:
        raise ValueError(f"data: unknown key {unknown[0]!r}, expected some of {sorted(DATA_KEYS)}")
    if data_cfg.get("type") not in DATASETS:
        raise ValueError(f"data.type={data_cfg.get('type')!r}: expected one of {sorted(DATASETS)}")
    for key in ("batch_size", "val_batch_size"):
        v = data_cfg.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"data.{key}={v!r}: expected a positive int")
    v = data_cfg.get("num_workers", 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"data.num_workers={v!r}: expected an int >= 0")
    _pipeline_kwargs(data_cfg.get("train_pipeline", {}), TrainPipeline, "train_pipeline")
    _pipeline_kwargs(data_cfg.get("test_pipeline", {}), TestPipeline, "test_pipeline")
    kwargs = data_cfg.get("dataset_kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"data.dataset_kwargs must be a dict, got {type(kwargs).__name__}")
    params = set(inspect.signature(DATASETS[data_cfg["type"]]).parameters) - {"root", "split", "pipeline"}
    unknown = sorted(set(kwargs) - params)
    if unknown:
        raise ValueError(f"data.dataset_kwargs: unknown key {unknown[0]!r} for {data_cfg['type']}, "
                         f"expected some of {sorted(params)}")
    if data_cfg["type"] != "Synthetic" and not data_cfg.get("root"):
        raise ValueError(f"data.root missing: {data_cfg['type']} reads its files from a root folder")


def build_pipeline(data_cfg: dict, split: str) -> TrainPipeline | TestPipeline:
    """``train_pipeline`` for the train split, ``test_pipeline`` for val and test."""
    if split == "train":
        return TrainPipeline(**_pipeline_kwargs(data_cfg.get("train_pipeline", {}), TrainPipeline,
                                                "train_pipeline"))
    return TestPipeline(**_pipeline_kwargs(data_cfg.get("test_pipeline", {}), TestPipeline, "test_pipeline"))


def build_dataset(data_cfg: dict, split: str, pipeline: Pipeline | None = None) -> SegDataset:
    """Validate ``data_cfg`` and build the dataset of ``split`` ("train", "val" or "test").

    ``pipeline`` overrides the configured one (e.g. ``lambda im, m, rng: (im, m)`` for raw samples).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split {split!r} unknown, expected 'train', 'val' or 'test'")
    validate_data_cfg(data_cfg)
    cls = DATASETS[data_cfg["type"]]
    pipeline = pipeline if pipeline is not None else build_pipeline(data_cfg, split)
    return cls(root=data_cfg.get("root"), split=split, pipeline=pipeline, **data_cfg.get("dataset_kwargs", {}))


def collate(samples: Sequence[dict]) -> dict:
    """Stack samples, padding bottom/right to the largest size in the batch.

    Returns:
        ``{"image": uint8 (B, 3, H, W) padded with 0, "mask": int64 (B, H, W) padded with 255,
        "path": list[str], ...}``; other keys (e.g. ``orig_size``) become lists. Test samples keep
        masks at their original sizes, which may differ from the image sizes; each is padded apart.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    out: dict = {}
    h = max(s["image"].shape[1] for s in samples)
    w = max(s["image"].shape[2] for s in samples)
    images = torch.zeros(len(samples), 3, h, w, dtype=torch.uint8)  # (B, 3, H, W)
    for i, s in enumerate(samples):
        images[i, :, : s["image"].shape[1], : s["image"].shape[2]] = s["image"]
    mh = max(s["mask"].shape[0] for s in samples)
    mw = max(s["mask"].shape[1] for s in samples)
    masks = torch.full((len(samples), mh, mw), IGNORE_INDEX, dtype=torch.int64)  # (B, H, W)
    for i, s in enumerate(samples):
        masks[i, : s["mask"].shape[0], : s["mask"].shape[1]] = s["mask"]
    out["image"], out["mask"] = images, masks
    for key in samples[0]:
        if key not in out:
            out[key] = [s[key] for s in samples]
    return out
