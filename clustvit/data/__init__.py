"""Datasets, transforms and batching. ``build_dataset(data_cfg, split)`` is the entry point.

Names are imported lazily (PEP 562) so the prep tools (``clustvit.data.prep_*``) start without torch.
"""

import importlib

_EXPORTS = {
    "DatasetError": "base", "SegDataset": "base",
    "DATASETS": "build", "build_dataset": "build", "collate": "build", "validate_data_cfg": "build",
    "ADE20K": "datasets", "SUIM": "datasets", "RumexWeeds": "datasets",
    "Synthetic": "synthetic",
    "IGNORE_INDEX": "transforms", "TestPipeline": "transforms", "TrainPipeline": "transforms",
    "sample_rng": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clustvit.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"clustvit.data.{_EXPORTS[name]}"), name)
