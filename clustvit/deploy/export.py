"""ONNX export of the whole segmentor, data-dependent token merging included, and its verification.

The exported graph takes one image ``(1, 3, H, W)`` float RGB 0..255 at a fixed size and returns
``logits (1, n_cls, H, W)``, ``tokens (1,)`` (the sequence length after the injection point: it varies
per image) and, for ClustViT, ``cluster_ids (1, N)``. ``torch.export`` traces ClustViT's merge path
unconditionally (``torch.compiler.is_exporting()``, torch >= 2.7), so the graph holds the cluster arg-max, the
index bookkeeping of ``plan_merge``, the shorter attention and the regeneration, with the packed
length as a data-dependent dimension. Sliding-window tiling (``test_cfg.mode == "slide"``) stays
outside the graph: export at the crop size and tile in the caller.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustvit.atomic import atomic_path
from clustvit.data.build import build_pipeline
from clustvit.data.transforms import resize
from clustvit.models.segmentor import Segmentor


class ExportedSegmentor(nn.Module):
    """The graph that is exported: image in, full-resolution logits (and merge statistics) out."""

    def __init__(self, seg: Segmentor) -> None:
        super().__init__()
        self.seg = seg

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """(1, 3, H, W) float RGB 0..255 -> logits (1, n_cls, H, W), tokens (1,) [, cluster_ids (1, N)]."""
        out = self.seg(image)
        logits = F.interpolate(out.logits, image.shape[2:], mode="bilinear", align_corners=False)
        tokens = out.backbone.tokens_per_block[:, -1]  # (1,) sequence length after merging
        if out.backbone.cluster_ids is None:
            return logits, tokens
        return logits, tokens, out.backbone.cluster_ids


def output_names(seg: Segmentor) -> list[str]:
    return ["logits", "tokens", "cluster_ids"] if seg.num_clusters else ["logits", "tokens"]


def default_shape(cfg: dict, seg: Segmentor) -> tuple[int, int]:
    """(H, W) the model sees at test time: the crop of sliding-window configs, else the fixed test resize."""
    if seg.test_mode == "slide":
        return tuple(seg.crop_size)
    if cfg.get("data"):
        test = build_pipeline(cfg["data"], "test")
        if not test.keep_ratio:
            return int(test.scale[1]), int(test.scale[0])  # mmcv scale is (w, h)
    grid = seg.backbone.grid
    p = seg.backbone.patch_size
    return grid[0] * p, grid[1] * p


# The graph's own description, in the ONNX file's metadata_props (read by clustvit.deploy.runtime).
METADATA_KEYS = ("clustvit.classes", "clustvit.palette", "clustvit.source")


def metadata(classes: Sequence[str], palette: Sequence[Sequence[int]], source: str) -> dict[str, str]:
    """``metadata_props`` for :func:`export_onnx`: class names, palette (JSON) and what it was exported from."""
    return {"clustvit.classes": json.dumps(list(classes)),
            "clustvit.palette": json.dumps([[int(v) for v in c] for c in palette]),
            "clustvit.source": source}


def check_export_supported() -> None:
    """Raise ValueError in one line if this torch cannot trace the merge (it needs ``is_exporting``)."""
    if not hasattr(torch.compiler, "is_exporting"):
        raise ValueError(f"ONNX export needs torch >= 2.7 (torch.compiler.is_exporting), this is torch {torch.__version__}")


def export_onnx(seg: Segmentor, path: str | os.PathLike, shape: Sequence[int], verbose: bool = False,
                meta: Mapping[str, str] | None = None) -> Path:
    """Export ``seg`` (eval mode, batch 1, image size ``shape = (H, W)``) to ONNX with ``dynamo=True``.

    ``meta``: stored in the file's ``metadata_props`` (see :func:`metadata`).

    Returns:
        The written path (written atomically).
    """
    check_export_supported()
    seg = seg.eval()
    H, W = shape
    g = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, H, W, generator=g) * 255  # the values do not shape the graph: the merge is traced
    with torch.no_grad():
        program = torch.onnx.export(
            ExportedSegmentor(seg).eval(), (example,), dynamo=True, input_names=["image"],
            output_names=output_names(seg), verbose=verbose,
        )
    program.model.metadata_props.update(meta or {})
    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp:
        program.save(tmp)
    return path


def to_input(rgb: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(h, w, 3) uint8 -> (1, 3, H, W) float32 0..255, bilinear resize to ``shape`` (as the test pipeline)."""

    rgb, _ = resize(rgb, None, (int(shape[0]), int(shape[1])))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)


@torch.no_grad()
def verify(
    onnx_path: str | os.PathLike, seg: Segmentor, images: Sequence[np.ndarray], shape: Sequence[int],
    run: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None,
) -> list[dict]:
    """Run the exported graph (onnxruntime on ``onnx_path``, or ``run``) and PyTorch on the same inputs and compare.

    Args:
        images: (h, w, 3) uint8 RGB images, resized to ``shape``.
        run: input (1, 3, H, W) float32 -> the graph's outputs in order (e.g. an OpenVINO IR,
            :func:`clustvit.deploy.quantize.openvino_runner`); default: an onnxruntime session on ``onnx_path``.

    Returns:
        Per image: ``max_abs_diff`` of the logits, ``agreement`` (share of pixels with the same arg-max),
        ``disagree_not_tie`` (differing pixels whose PyTorch top-2 margin exceeds 2 x max_abs_diff), ``tokens_onnx`` / ``tokens_torch`` (sequence length after merging) and ``ids_agreement``.
    """
    if run is None:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        run = lambda x: sess.run(None, {"image": x})  # noqa: E731 - the one default runner
    model = ExportedSegmentor(seg.eval()).eval()
    results = []
    for rgb in images:
        x = to_input(rgb, shape)
        ours = [t.cpu().numpy() for t in model(torch.from_numpy(x).to(next(seg.parameters()).device))]
        theirs = run(x)
        diff = float(np.abs(theirs[0] - ours[0]).max())
        disagree = theirs[0].argmax(1) != ours[0].argmax(1)  # (1, H, W)
        top2 = np.sort(ours[0], axis=1)[:, -2:]  # (1, 2, H, W)
        tie = (top2[:, 1] - top2[:, 0]) <= 2 * diff  # a difference this small can flip the arg-max
        r = dict(
            max_abs_diff=diff,
            agreement=float(1 - disagree.mean()),
            disagree_pixels=int(disagree.sum()),
            disagree_not_tie=int((disagree & ~tie).sum()),  # disagreements not explained by float noise
            tokens_onnx=int(theirs[1][0]),
            tokens_torch=int(ours[1][0]),
        )
        if len(ours) > 2:
            r["ids_agreement"] = float((theirs[2] == ours[2]).mean())
        results.append(r)
    return results
