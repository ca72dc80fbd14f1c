"""clustvit: ClustViT (clustering-based token merging for ViT semantic segmentation) in plain PyTorch.

    model = clustvit.load("clustvit-b_k3ip3_suim")     # a zoo name, config (path or name) or hub folder
    labels = model.predict(rgb)                        # (H, W, 3) uint8 -> (H, W) int64

The names below are imported on first use (PEP 562), so ``import clustvit`` and ``clustvit --help``
do not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "load": "clustvit.inference.api",
    "Predictor": "clustvit.inference.predictor",
    "save_pretrained": "clustvit.zoo.hub",
    "load_config": "clustvit.configs",
    "accelerate": "clustvit.accel",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clustvit' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
