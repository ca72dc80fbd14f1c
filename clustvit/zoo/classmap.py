"""Outputs of an official checkpoint onto our classes, and the official scoring of our labels.

The official SUIM code has 9 made-up classes matched by exact mask colour (README, "Differences"):
BW->0, HD->1, WR->2, RO->4, PF->5, FV->6, RI->7; 3 and 8 never occur, and SR (white) matches nothing,
so its pixels became background (BW) in the official ground truth. Ours are the real 8 in label order
(BW 0, HD 1, PF 2, WR 3, RO 4, RI 5, FV 6, SR 7).

Rules:
  * our class c takes the logits of official output ``source[c]``; a class with no source (SR) gets a
    logit 1 below the pixel's lowest and is never predicted, also after a bilinear resize (finite: a
    resize of -inf gives NaN, which arg-max would pick); the never-trained official outputs 3 and 8 are dropped, so a pixel
    goes to the best of the mapped classes;
  * scored as the seed was (``official_targets``), our SR pixels count as BW, as in the official masks:
    SR is then absent from both prediction and ground truth and leaves the mean (NaN), and the mIoU is
    over the 7 classes the official head learned, comparable with the seed's figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ClassMap:
    """``source[c]``: the checkpoint output that our class c reads (-1: none); ``targets``: our
    ground-truth label -> the label the official masks gave those pixels."""

    num_outputs: int
    source: tuple[int, ...]
    targets: tuple[tuple[int, int], ...] = ()


CLASS_MAPS: dict[str, ClassMap] = {
    # ours:  BW HD PF WR RO RI FV SR   <- official outputs
    "suim9": ClassMap(9, (0, 1, 5, 2, 4, 7, 6, -1), targets=((7, 0),)),
}


def map_logits(logits: Tensor, source: Tensor) -> Tensor:
    """(B, n_out, H, W) checkpoint logits -> (B, len(source), H, W) logits of our classes.

    ``source`` (C,) int64: output index per class of ours, -1 where none (that class gets the pixel's
    lowest logit minus 1).
    """
    if logits.shape[1] <= int(source.max()):
        raise ValueError(f"class map: expected at least {int(source.max()) + 1} outputs, got {logits.shape[1]}")
    source = source.to(logits.device)
    out = logits.index_select(1, source.clamp(min=0))
    missing = source < 0
    if bool(missing.any()):
        floor = out[:, ~missing].amin(1, keepdim=True) - 1.0  # (B, 1, H, W)
        out[:, missing] = floor.expand(-1, int(missing.sum()), -1, -1).to(out.dtype)
    return out


def official_targets(mask: Tensor, class_map: ClassMap) -> Tensor:
    """Our ground-truth labels as the official masks have them (e.g. SUIM: SR -> BW); any shape."""
    out = mask.clone()
    for ours, official in class_map.targets:
        out[mask == ours] = official
    return out


class ClassMapped(nn.Module):
    """A segmentor whose ``predict_logits`` / ``predict`` give our classes; everything else (backbone,
    test_cfg, ``forward``) is the wrapped model's. Holds no parameters of its own."""

    def __init__(self, model: nn.Module, class_map: ClassMap) -> None:
        super().__init__()
        if model.num_classes != class_map.num_outputs:
            raise ValueError(f"class map: the model has {model.num_classes} outputs, the map expects "
                             f"{class_map.num_outputs}")
        self.model = model
        self.class_map = class_map
        device = next(model.parameters()).device  # wrapped after the model moved: the index goes along
        self.register_buffer("source", torch.tensor(class_map.source, dtype=torch.int64, device=device),
                             persistent=False)
        self.num_classes = len(class_map.source)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def forward(self, images: Tensor, cluster_ids: Tensor | None = None) -> Any:
        """The wrapped model's output, logits in the checkpoint's own classes (``predict_logits`` maps them)."""
        return self.model(images, cluster_ids)

    def predict_logits(self, images: Tensor, guide: Tensor | None = None, run: Any = None) -> Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, C_ours, H, W); ``guide`` and ``run`` as in ``Segmentor.predict_logits``."""
        return map_logits(self.model.predict_logits(images, guide, run), self.source)

    def predict(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, H, W) int64 labels of our classes."""
        return self.predict_logits(images).argmax(1)


class OfficialTargets:
    """A test dataset whose masks are scored as the official masks label them (``official_targets``)."""

    def __init__(self, dataset: Any, class_map: ClassMap) -> None:
        self.dataset, self.class_map = dataset, class_map

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        sample = dict(self.dataset[i])
        sample["mask"] = official_targets(torch.as_tensor(sample["mask"]), self.class_map)
        return sample

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
