"""Where does ClustViT merge? Per-image cluster panels, a purity summary, and PCA-to-RGB feature maps.

Everything reads the model's own outputs (``BackboneOutput.cluster_ids`` and, for features,
``ClustViT.forward_intermediates``), never a second copy of the forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clustvit.data.base import read_image
from clustvit.data.build import build_dataset, build_pipeline
from clustvit.data.transforms import rescale_size, resize
from clustvit.inference.predict import collect_images
from clustvit.models.losses import pseudo_labels
from clustvit.models.merging import merge, regenerate, unmerge
from clustvit.models.oracle import oracle_logits, seg_cluster_ids
from clustvit.models.segmentor import Segmentor
from clustvit.viz.draw import blank, colorize, distinct_colours, grid, paint_tokens, panel


@dataclass
class TokenView:
    """What the model did with one image. ``h, w`` = token grid, ``H, W`` = image size."""

    image: np.ndarray  # (H, W, 3) uint8, as the model saw it
    patch: int  # pixels per token side
    ids: np.ndarray  # (h, w) cluster id used per token: 0 keep, 1..K merged
    pred: np.ndarray  # (H, W) predicted class
    tokens: int  # sequence length after the injection point (cls + kept + cluster tokens)
    reduced: bool  # False when all tokens carry one id: then nothing is merged
    target: np.ndarray | None = None  # (h, w) pseudo-label cluster targets (needs a mask)
    patch_class: np.ndarray | None = None  # (h, w) majority ground-truth class per token, -1 = none


@torch.no_grad()
def analyse(seg: Segmentor, image: Tensor, mask: Tensor | None = None, oracle: bool = False) -> TokenView:
    """Run one image and collect its cluster assignment, pseudo-labels and prediction.

    Args:
        image: (3, H, W) uint8 RGB as the test pipeline produces it.
        mask: (H, W) int64 ground truth (255 = ignore), optional; ``oracle=True`` needs it.
        oracle: the mask's pseudo-labels replace the Cluster module (``models.oracle``).
    """
    if not seg.num_clusters:
        raise ValueError("cluster analysis needs a ClustViT model (the config's backbone has no Cluster module)")
    x = image[None].to(next(seg.parameters()).device, torch.float32)  # (1, 3, H, W)
    masks = None if mask is None else mask[None].to(x.device)
    if oracle and masks is None:
        raise ValueError("oracle clusters need the image's mask")
    out = seg(x, seg_cluster_ids(seg, masks) if oracle else None)
    if seg.test_mode == "whole":  # the forward above already is the prediction
        logits = F.interpolate(out.logits, x.shape[2:], mode="bilinear", align_corners=False)
    else:
        logits = oracle_logits(seg, x, masks) if oracle else seg.predict_logits(x)
    p = seg.backbone.patch_size
    h, w = -(-x.shape[2] // p), -(-x.shape[3] // p)  # the patch embedding pads up to whole patches
    view = TokenView(
        image=image.permute(1, 2, 0).cpu().numpy(),
        patch=p,
        ids=out.backbone.cluster_ids[0].view(h, w).cpu().numpy(),
        pred=logits[0].argmax(0).cpu().numpy(),
        tokens=int(out.backbone.tokens_per_block[0, -1]),
        reduced=bool(out.backbone.merged[0]),
    )
    if mask is not None:
        target = pseudo_labels(mask[None].cpu(), seg.num_clusters, p)[0].numpy()  # (H//p, W//p)
        view.target = np.zeros((h, w), dtype=np.int64)
        view.target[: target.shape[0], : target.shape[1]] = target
        view.patch_class = majority_class(mask.cpu(), (h, w), seg.num_classes, p, seg.ignore_index)
    return view


def majority_class(
    mask: Tensor, hw: tuple[int, int], num_classes: int, patch: int, ignore_index: int = 255
) -> np.ndarray:
    """The most frequent labelled class in every patch; -1 where a patch has no labelled pixel.

    Args:
        mask: (H, W) labels; padded with ``ignore_index`` up to ``hw * patch`` like the image is padded.

    Returns:
        (h, w) int64.
    """
    h, w = hw
    full = torch.full((h * patch, w * patch), ignore_index, dtype=torch.long)
    full[: mask.shape[0], : mask.shape[1]] = mask.long()
    tiles = full.view(h, patch, w, patch).permute(0, 2, 1, 3).reshape(h * w, patch * patch)  # (h*w, p*p)
    valid = (tiles >= 0) & (tiles < num_classes)
    counts = torch.zeros(h * w, num_classes + 1, dtype=torch.long)
    counts.scatter_add_(1, torch.where(valid, tiles, num_classes), torch.ones_like(tiles))  # last column: ignore
    best = counts[:, :num_classes].argmax(1)
    return torch.where(valid.any(1), best, -1).view(h, w).numpy()


def cluster_panel(view: TokenView, palette: Sequence[Sequence[int]], num_clusters: int) -> np.ndarray:
    """image | Cluster-module assignment | pseudo-label target | prediction, each (H, W), titled.

    Merged tokens are painted in their cluster's colour over the image; kept tokens are left untouched
    (transparent). Without a mask the target pane is grey.

    Returns:
        (TITLE_HEIGHT + H, 4 W, 3) uint8.
    """
    colours = distinct_colours(num_clusters)
    H, W = view.image.shape[:2]
    # An image whose tokens all carry one id is not reduced: every token is kept, so none is painted.
    ids = view.ids if view.reduced else np.zeros_like(view.ids)
    title = f"clusters: {view.tokens} of {1 + ids.size} tok" if view.reduced else "clusters: not reduced"
    target = blank(H, W) if view.target is None else paint_tokens(view.image, view.target, colours, view.patch)
    return panel(
        [view.image, paint_tokens(view.image, ids, colours, view.patch), target, colorize(view.pred, palette)],
        ["image", title, "pseudo-label target", "prediction"],
    )


def load_inputs(
    cfg: dict, data_root: str | None = None, split: str = "val", images: Sequence[str] = (), num: int | None = None
) -> list[tuple[Tensor, Tensor | None, str]]:
    """The images to analyse, resized as the config's test pipeline resizes them (masks nearest, alongside).

    Args:
        data_root: read the config's dataset from this root (``split``); masks come with the images.
        images: image files instead (no masks).
        num: at most this many.

    Returns:
        [(image (3, H, W) uint8, mask (H, W) int64 or None, name)].
    """

    test = build_pipeline(cfg["data"], "test") if cfg.get("data") else None

    def fit(image: np.ndarray, mask: np.ndarray | None, rng: object = None) -> tuple[np.ndarray, np.ndarray | None]:
        if test is None:
            return image, mask
        return resize(image, mask, rescale_size(image.shape[0], image.shape[1], test.scale, test.keep_ratio))

    out = []
    if images:
        for path in collect_images(images)[:num]:
            image, _ = fit(read_image(path), None)
            out.append((torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), None, path.stem))
        return out
    if not cfg.get("data"):
        raise ValueError("the config has no data section: give --images PATH...")
    data_cfg = dict(cfg["data"], **({"root": data_root} if data_root is not None else {}))
    ds = build_dataset(data_cfg, split, pipeline=fit)
    for i in range(min(len(ds), num or len(ds))):
        s = ds[i]
        out.append((s["image"], s["mask"], Path(s["path"]).stem))
    return out


def summarize(views: Sequence[TokenView], num_clusters: int) -> dict:
    """Share of tokens merged, mean tokens kept, and per-cluster purity against the ground truth.

    Purity of cluster j: within each image, the share of its tokens whose majority ground-truth class is
    the cluster's most common class there (cluster ids mean different classes in different images),
    pooled over images weighted by tokens. Only tokens with a labelled pixel count; ``None`` without masks.
    """
    n_tokens = sum(v.ids.size for v in views)
    merged = sum(int((v.ids > 0).sum()) for v in views if v.reduced)
    clusters = []
    for j in range(1, num_clusters + 1):
        count = sum(int((v.ids == j).sum()) for v in views)
        hits = total = 0
        for v in views:
            if v.patch_class is None:
                continue
            cls = v.patch_class[(v.ids == j) & (v.patch_class >= 0)]
            if cls.size:
                hits += int(np.bincount(cls).max())
                total += int(cls.size)
        with_gt = any(v.patch_class is not None for v in views)
        clusters.append(dict(cluster=j, tokens=count, share=count / max(n_tokens, 1),
                             purity=(hits / total if total else None) if with_gt else None))
    agree = [(v.ids == v.target) for v in views if v.target is not None]
    return dict(
        images=len(views),
        images_reduced=sum(v.reduced for v in views),
        merged_share=merged / max(n_tokens, 1),
        mean_tokens=float(np.mean([v.tokens for v in views])) if views else 0.0,
        mean_tokens_unmerged=float(np.mean([1 + v.ids.size for v in views])) if views else 0.0,
        pseudo_label_agreement=float(np.mean(np.concatenate([a.ravel() for a in agree]))) if agree else None,
        clusters=clusters,
    )


def format_summary(summary: dict) -> str:
    """A printable table of ``summarize``'s result."""
    pct = lambda v: "   -  " if v is None else f"{100 * v:5.1f}%"  # noqa: E731 - a local formatter
    lines = [
        f"images: {summary['images']} ({summary['images_reduced']} reduced)   "
        f"tokens merged: {pct(summary['merged_share']).strip()}   "
        f"mean tokens after merging: {summary['mean_tokens']:.1f} of {summary['mean_tokens_unmerged']:.0f}   "
        f"agreement with pseudo-labels: {pct(summary['pseudo_label_agreement']).strip()}",
        "cluster   tokens   share   purity",
    ]
    for c in summary["clusters"]:
        lines.append(f"{c['cluster']:>7} {c['tokens']:>8} {pct(c['share'])} {pct(c['purity'])}")
    return "\n".join(lines)


def pca_basis(feats: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit a 3-component PCA on token features and the 1st/99th percentiles of the projections.

    Args:
        feats: (M, C) tokens.

    Returns:
        mean (C,), components (C, 3), low (3,), high (3,).
    """
    x = feats.detach().double().cpu().numpy()
    mean = x.mean(0)
    # numpy's SVD: torch's CPU SVD takes ~1 s even on a 100x32 matrix here.
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)  # vt: (min(M, C), C)
    comps = np.zeros((x.shape[1], 3))
    comps[:, : min(3, len(vt))] = vt[:3].T  # (C, 3); fewer than 3 components: the rest stay 0
    proj = (x - mean) @ comps  # (M, 3)
    return mean, comps, np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)


def pca_rgb(feats: Tensor, basis: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """Project (M, C) features on a PCA basis (fitted here if not given) -> (M, 3) uint8 colours."""
    mean, comps, lo, hi = basis if basis is not None else pca_basis(feats)
    proj = (feats.detach().double().cpu().numpy() - mean) @ comps  # (M, 3)
    rgb = (proj - lo) / np.maximum(hi - lo, 1e-12)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def feature_grid(seg: Segmentor, image: Tensor, layers: Sequence[int] | None = None) -> np.ndarray:
    """PCA-to-RGB maps of chosen blocks: before merging, after merging, after regeneration.

    Rows: a header (image | cluster assignment), then one row per block ``i``:
      * before merging: the full-length output of block ``i`` (blocks before the injection point);
      * after merging: each token shows the packed token that stands for it (its own, or its cluster's
        mean): the injection tokens merged for block ``ip - 1``, the packed output for blocks ``>= ip``;
      * after regeneration: the Regenerator's full-length rebuild from that packed output.
    One PCA basis per row, so the three maps of a row share colours.

    Args:
        image: (3, H, W) uint8 RGB.
        layers: block indices; default (ip - 1, ip, depth - 1).

    Returns:
        (rows * (TITLE_HEIGHT + H), 3 W, 3) uint8.
    """
    bb = seg.backbone
    if not getattr(bb, "num_clusters", 0) or not hasattr(bb, "injection_point"):
        raise ValueError("feature maps before/after merging need a ClustViT backbone")
    ip, depth = bb.injection_point, bb.depth
    layers = sorted({i for i in (ip - 1, ip, depth - 1) if i >= 0}) if not layers else list(layers)
    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise ValueError(f"--layers {bad}: blocks must lie in [0, {depth})")
    x = image[None].to(next(seg.parameters()).device, torch.float32)
    out, record = bb.forward_intermediates(seg.normalise(x))
    plan, blocks, x_inj = record.plan, record.block_outputs, record.tokens_at_injection
    B, L, C = x_inj.shape
    H, W = x.shape[2:]
    p = bb.patch_size
    h, w = -(-H // p), -(-W // p)
    rgb = image.permute(1, 2, 0).cpu().numpy()
    colours = distinct_colours(bb.num_clusters)
    tokens = int(out.tokens_per_block[0, -1])
    rows = [panel([rgb, paint_tokens(rgb, out.cluster_ids[0].view(h, w).cpu().numpy(), colours, p), blank(H, W, 255)],
                  ["image", "clusters (kept = unpainted)", f"{tokens} of {L} tokens after merging"])]

    def patches(seq: Tensor) -> Tensor:  # (B*L, C) or (1, L, C) -> (N, C) patch tokens of image 0
        return seq.reshape(B, L, C)[0, 1:].float().cpu()

    for i in layers:
        maps: list[Tensor | None] = [None, None, None]
        if i < ip:
            maps[0] = patches(blocks[i])
            if i == ip - 1:
                maps[1] = patches(unmerge(merge(x_inj, plan), plan))
        else:
            maps[1] = patches(unmerge(blocks[i], plan))
            maps[2] = patches(regenerate(blocks[i], x_inj, plan, bb.regenerator))
        basis = pca_basis(torch.cat([m for m in maps if m is not None]))
        panes = [blank(H, W) if m is None else _upsample(pca_rgb(m, basis).reshape(h, w, 3), H, W, p) for m in maps]
        rows.append(panel(panes, [f"block {i}: before merging", f"block {i}: after merging",
                                  f"block {i}: after regeneration"]))
    return grid(rows)


def _upsample(tokens_rgb: np.ndarray, H: int, W: int, patch: int) -> np.ndarray:
    """(h, w, 3) per-token colours -> (H, W, 3), one patch x patch block per token (cropped to the image)."""
    return np.repeat(np.repeat(tokens_rgb, patch, 0), patch, 1)[:H, :W]
