"""``Predictor``: a segmentor plus its config's test-time resize, for one image at a time.

``Predictor.predict`` applies the config's test pipeline (resize, then whole-image or sliding-window
inference as ``model.test_cfg`` says), resizes the logits back to the input size and takes the arg-max,
so a mask comes back at the resolution of the image given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .accel import accelerate
from .models.amp import amp_dtype
from .models.segmentor import Segmentor
from .visualize import distinct_colours


class Predictor:
    """A segmentor plus the test-time resize of its config. Images are (H, W, 3) uint8 RGB numpy arrays."""

    def __init__(
        self,
        model: Segmentor,
        scale: Sequence[int] | None,
        keep_ratio: bool = True,
        classes: Sequence[str] = (),
        palette: Sequence[Sequence[int]] = (),
        amp: bool = False,
    ) -> None:
        self.model = model.eval()
        self.scale, self.keep_ratio, self.amp = (tuple(scale) if scale else None), keep_ratio, amp
        accelerate(self.model, self.device, amp_dtype(self.device) if amp else None)
        self.classes = tuple(classes) or tuple(f"class{i}" for i in range(model.num_classes))
        self.palette = [tuple(c) for c in palette] or distinct_colours(model.num_classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, rgb: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (1, 3, h, w) float 0..255 on the model's device, resized as the test pipeline does."""
        from .data.transforms import rescale_size, resize

        if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3):
            raise ValueError(f"expected an (H, W, 3) RGB numpy array, got {getattr(rgb, 'shape', type(rgb))}")
        if self.scale is not None:
            rgb, _ = resize(rgb, None, rescale_size(rgb.shape[0], rgb.shape[1], self.scale, self.keep_ratio))
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # (1, 3, h, w)
        return x.to(self.device, torch.float32)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on CPU, float16 on CUDA, when ``amp`` is on."""
        if not self.amp:
            return contextlib.nullcontext()
        kind = self.device.type
        return torch.autocast(kind, dtype=torch.float16 if kind == "cuda" else torch.bfloat16)

    @torch.no_grad()
    def predict_logits(self, rgb: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (n_cls, H, W) float32 logits at the input resolution."""
        x = self.preprocess(rgb)
        with self.autocast():
            logits = self.model.predict_logits(x).float()  # (1, n_cls, h, w)
        return F.interpolate(logits, rgb.shape[:2], mode="bilinear", align_corners=False)[0]

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) int64 class indices."""
        return self.predict_logits(rgb).argmax(0).cpu().numpy().astype(np.int64)
