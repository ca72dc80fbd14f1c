"""``Predictor``: a segmentor plus its config's test-time resize, for one image at a time.

``Predictor.predict`` applies the config's test pipeline (resize, then whole-image or sliding-window
inference as ``model.test_cfg`` says), resizes the logits back to the input size and takes the arg-max,
so a mask comes back at the resolution of the image given.

Memory: the logits are never held at the input resolution for all classes at once (150 classes of a
24-megapixel photo would be 14 GB): :func:`upsampled_argmax` upsamples a few classes at a time and keeps
a running arg-max, with the same labels as upsampling everything first.

Inputs (:func:`as_rgb`): ``(H, W, 3)`` uint8 RGB as is; grey ``(H, W)`` or ``(H, W, 1)`` repeated to three
channels; ``(H, W, 4)`` RGBA with the alpha channel dropped (as ``PIL.Image.convert("RGB")`` does); floating
point in [0, 1] scaled to 0..255 and rounded to uint8, the data the models were trained on. Anything else
(empty, 1-D, other channel counts, floats outside [0, 1], other integer types) is one ``ValueError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clustvit.accel import accelerate, amp_dtype
from clustvit.data.transforms import rescale_size, resize
from clustvit.models.segmentor import Segmentor
from clustvit.viz.draw import distinct_colours

# Upper bound on the upsampled slice of logits held at once (float32): a 512 x 683 ADE20K image takes
# its 150 classes in 4 slices; above 16.7 megapixels a single class exceeds it and goes alone.
CHUNK_BYTES = 64 << 20


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any supported image array -> ``(H, W, 3)`` uint8 RGB (the module docstring lists what is accepted).

    Raises:
        ValueError: one line saying what was given and what is expected.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an (H, W, 3) uint8 RGB numpy array, got {type(image).__name__}")
    shape = image.shape
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(f"expected an (H, W, 3) RGB image (or grey (H, W), RGBA (H, W, 4)), "
                         f"H, W >= 1; got an array of shape {shape}")
    if image.dtype.kind == "f":
        lo, hi = (float(image.min()), float(image.max())) if np.isfinite(image).all() else (np.nan, np.nan)
        if not (lo >= 0.0 and hi <= 1.0):  # NaN fails too
            raise ValueError(f"float image values must lie in [0, 1] (got {lo:g}..{hi:g}); "
                             "for 0..255 data pass image.astype(np.uint8)")
        image = np.rint(image * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"expected uint8 (or float in [0, 1]) pixels, got {image.dtype}; "
                         "convert with .astype(np.uint8) after scaling to 0..255")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image if image.shape[2] == 3 else np.ascontiguousarray(image[:, :, :3])


def _chunks(n: int, step: int) -> list[tuple[int, int]]:
    """(start, size) slices of `n` classes, `step` at a time, none of size 3 (see `upsampled_argmax`)."""
    sizes = [step] * (n // step) + ([n % step] if n % step else [])
    sizes = [part for k in sizes for part in ((2, 1) if k == 3 else (k,))]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return list(zip(starts, sizes))


def upsampled_argmax(logits: Tensor, size: Sequence[int], chunk_bytes: int = CHUNK_BYTES) -> Tensor:
    """Arg-max over classes of the logits bilinearly upsampled to `size`, a slice of classes at a time.

    Args:
        logits: (n_cls, h, w) finite float logits.
        size: (H, W) output size.
        chunk_bytes: the most float32 bytes of upsampled logits held at once (at least one class).

    Returns:
        (H, W) int64 labels, equal to ``F.interpolate(logits[None], size, "bilinear").argmax(1)[0]``.

    Why equal: on CPU, PyTorch's generic bilinear kernel computes every output value from its four
    inputs alone, whatever the number of channels; a tie keeps the lower class as ``argmax`` does (a
    later slice must be strictly greater to win). Its vectorised kernel, which PyTorch picks for
    channels-last inputs of more than 3 channels, outputs with H + W <= 128, and 3 channels on one
    thread, rounds by position within the channel vector: slices of 3 are avoided, and inputs that
    the whole call would send to it are upsampled whole (small outputs, 3 classes, channels-last).
    Beside the labels it holds one slice, the running maximum and a mask: about 13 bytes per output
    pixel when a slice is one class (above 16.7 megapixels at the default `chunk_bytes`).
    """
    n, (H, W) = logits.shape[0], (int(size[0]), int(size[1]))
    src = logits[None].float()  # (1, n_cls, h, w)
    whole_vectorised = (src.is_contiguous(memory_format=torch.channels_last) and n > 3) or H + W <= 128 \
        or (n == 3 and torch.get_num_threads() == 1)
    if whole_vectorised or n <= 3:
        return F.interpolate(src, (H, W), mode="bilinear", align_corners=False)[0].argmax(0)
    src = src.contiguous()  # a strided input takes the generic kernel too: the same values
    step = max(1, min(n, chunk_bytes // max(4 * H * W, 1)))
    # One reused buffer: a fresh 100 MB tensor per class would be page-faulted in anew every time.
    buf = src.new_empty((1, step, H, W))
    best = best_idx = better = None
    for c, k in _chunks(n, step):
        up = buf[:, :k]  # (1, k, H, W), contiguous: a prefix along the class axis of a batch of one
        torch.ops.aten.upsample_bilinear2d.out(src[:, c : c + k], (H, W), False, None, None, out=up)
        if k == 1:
            val, idx = up[0, 0], None
        else:
            val, idx = up[0].max(0)  # (H, W): the first maximum on ties
        if best is None:
            best = val.clone()
            best_idx = idx if idx is not None else torch.zeros((H, W), dtype=torch.int64, device=src.device)
            better = torch.empty((H, W), dtype=torch.bool, device=src.device)
            continue
        torch.gt(val, best, out=better)
        if idx is None:
            best_idx.masked_fill_(better, c)
        else:
            best_idx = torch.where(better, idx + c, best_idx)
        torch.maximum(best, val, out=best)  # = where(better, val, best) for finite values
    return best_idx


class Predictor:
    """A segmentor plus the test-time resize of its config. Images are (H, W, 3) uint8 RGB numpy arrays
    (other layouts: :func:`as_rgb`)."""

    def __init__(
        self,
        model: Segmentor,
        scale: Sequence[int] | None,
        keep_ratio: bool = True,
        classes: Sequence[str] = (),
        palette: Sequence[Sequence[int]] = (),
        amp: bool = False,
        accel: bool = True,
    ) -> None:
        """``accel``: install the device's fast kernels (``clustvit.accel.accelerate``) into ``model``, in place."""
        self.model = model.eval()
        self.scale, self.keep_ratio, self.amp = (tuple(scale) if scale else None), keep_ratio, amp
        if accel:
            accelerate(self.model, self.device, amp_dtype(self.device) if amp else None)
        self.classes = tuple(classes) or tuple(f"class{i}" for i in range(model.num_classes))
        self.palette = [tuple(c) for c in palette] or distinct_colours(model.num_classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, rgb: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 (or any :func:`as_rgb` input) -> (1, 3, h, w) float 0..255 on the model's device,
        resized as the test pipeline does."""

        rgb = as_rgb(rgb)
        if self.scale is not None:
            rgb, _ = resize(rgb, None, rescale_size(rgb.shape[0], rgb.shape[1], self.scale, self.keep_ratio))
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # (1, 3, h, w)
        return x.to(self.device, torch.float32)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast in ``accel.amp_dtype`` (bfloat16; float16 on GPUs without it) when ``amp`` is on."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=amp_dtype(self.device))

    @torch.no_grad()
    def test_logits(self, rgb: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 (or any :func:`as_rgb` input) -> (n_cls, h, w) float32 logits at the test size."""
        with self.autocast():
            return self.model.predict_logits(self.preprocess(rgb)).float()[0]

    @torch.no_grad()
    def predict_logits(self, rgb: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 (or any :func:`as_rgb` input) -> (n_cls, H, W) float32 logits at the input resolution.

        n_cls x H x W floats: for large images prefer :meth:`predict`, which never holds them all.
        """
        rgb = as_rgb(rgb)
        return F.interpolate(self.test_logits(rgb)[None], rgb.shape[:2], mode="bilinear", align_corners=False)[0]

    @torch.no_grad()
    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB (or any :func:`as_rgb` input) -> (H, W) int64 class indices.

        The labels equal ``predict_logits(rgb).argmax(0)``, in memory that does not grow with the classes.
        """
        rgb = as_rgb(rgb)
        return upsampled_argmax(self.test_logits(rgb), rgb.shape[:2]).cpu().numpy()
