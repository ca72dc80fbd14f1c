"""What the efficiency tools share: model loading, benchmark inputs, the timed forward pass, token and
FLOP counts. (Timing: ``clustvit.bench.timing``; peak memory: ``clustvit.bench.memory``.)

Oracle clusters (``oracle=True``): ClustViT takes its cluster assignment from the ground-truth masks'
pseudo-labels instead of its Cluster module. It is an upper-bound analysis mode: it shows the reduction
a perfectly trained Cluster module would reach, and lets speed be measured on real images with random
weights. Backbones without clusters ignore the flag.
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from clustvit import loading
from clustvit.accel import accelerate
from clustvit.accel.dtype import amp_dtype
from clustvit.atomic import atomic_path
from clustvit.bench.flops import count_flops
from clustvit.bench.timing import autocast
from clustvit.data import build_dataset
from clustvit.data.synthetic import render_scene
from clustvit.inference.runtime import tune_malloc
from clustvit.models.oracle import oracle_logits


@dataclass
class Sample:
    """One benchmark input after the test pipeline."""

    image: Tensor  # (3, H, W) float RGB 0..255
    mask: Tensor  # (H, W) int64 at the image's resolution (nearest-resized), 255 = ignore
    name: str


def synthetic_sample(shape: Sequence[int], seed: int = 0) -> Sample:
    """A generated scene of size ``shape`` (H, W): large homogeneous regions and a few objects."""
    image, mask = render_scene(np.random.default_rng(seed), (int(shape[0]), int(shape[1])))
    return Sample(
        torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(mask.astype(np.int64)), "synthetic"
    )


def load_samples(
    cfg: dict, data_root: str | None = None, split: str = "test", limit: int | None = None
) -> list[Sample]:
    """The images of a dataset split after the config's test pipeline, with masks resized to match.

    Args:
        cfg: resolved config (its ``data`` dict names the dataset; ``data_root`` replaces its root).
        limit: keep the first ``limit`` images.
    """
    data_cfg = dict(cfg["data"])
    if data_root is not None:
        data_cfg["root"] = str(data_root)
    dataset = build_dataset(data_cfg, split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    samples = []
    for i in range(n):
        item = dataset[i]
        image = torch.as_tensor(item["image"]).float()  # (3, H, W)
        mask = np.asarray(item["mask"])
        if mask.shape != tuple(image.shape[1:]):
            # The test pipeline keeps the mask at its original size; oracle clusters need the image's grid.
            mask = cv2.resize(mask.astype(np.uint8), (image.shape[2], image.shape[1]), interpolation=cv2.INTER_NEAREST)
        samples.append(Sample(image, torch.as_tensor(mask.astype(np.int64)), str(item["path"])))
    return samples


def make_batches(samples: Sequence[Sample], batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """Stack consecutive samples of equal size into (B, 3, H, W) images and (B, H, W) masks."""
    batches: list[tuple[Tensor, Tensor]] = []
    group: list[Sample] = []
    for s in [*samples, None]:
        if group and (s is None or len(group) == batch_size or s.image.shape != group[0].image.shape):
            batches.append((torch.stack([g.image for g in group]), torch.stack([g.mask for g in group])))
            group = []
        if s is not None:
            group.append(s)
    return batches


def uses_clusters(seg: nn.Module) -> bool:
    return getattr(seg, "num_clusters", 0) > 0


@torch.no_grad()
def infer(seg: nn.Module, images: Tensor, masks: Tensor | None = None, oracle: bool = False) -> Tensor:
    """The full inference path that is timed and counted: (B, 3, H, W) 0..255 -> (B, n_cls, H, W) logits."""
    if oracle and uses_clusters(seg):
        return oracle_logits(seg, images, masks)
    return seg.predict_logits(images)


def oracle_ids(seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """The cluster ids our model uses with oracle clusters: one (n, N) tensor per backbone call, in order."""
    calls: list[Tensor] = []

    def hook(_module: nn.Module, _args: tuple, out: object) -> None:
        calls.append(out.cluster_ids.detach().cpu())

    handle = seg.backbone.register_forward_hook(hook)
    try:
        for images, masks in batches:
            infer(seg, images, masks, oracle=True)
    finally:
        handle.remove()
    return calls


def cpu_name() -> str:
    """The CPU model (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_info(args: argparse.Namespace) -> dict:
    """What a timing command's JSON records about its run: threads, host, torch and the input flags."""
    return {"threads": torch.get_num_threads(), "repeats": args.repeats, "oracle_clusters": args.oracle_clusters,
            "torch": torch.__version__, "host": cpu_name(), "data_root": args.data_root, "split": args.split,
            "shape": args.shape, "limit": args.limit}


def model_device(seg: nn.Module) -> torch.device:
    return next(seg.parameters()).device


def forward_pass(seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], oracle: bool, amp: bool) -> None:
    """Run every batch once through :func:`infer` (inputs already on the model's device): what is timed."""
    with autocast(model_device(seg), amp):
        for images, masks in batches:
            infer(seg, images, masks, oracle)


def to_device(batches: Sequence[tuple[Tensor, Tensor]], device: torch.device) -> list[tuple[Tensor, Tensor]]:
    return [(i.to(device), m.to(device)) for i, m in batches]


def collect_tokens(
    seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], oracle: bool = False
) -> np.ndarray:
    """Sequence length every block ran on, for every backbone call (each sliding window counts).

    Returns:
        (num_backbone_images, depth) int64.
    """
    rows: list[Tensor] = []

    def hook(_module: nn.Module, _args: tuple, out: object) -> None:
        rows.append(out.tokens_per_block.cpu())

    handle = seg.backbone.register_forward_hook(hook)
    try:
        device = model_device(seg)
        for images, masks in batches:
            infer(seg, images.to(device), masks.to(device), oracle)
    finally:
        handle.remove()
    return torch.cat(rows).numpy().astype(np.int64)


def flops_per_image(seg: nn.Module, samples: Sequence[Sample], oracle: bool = False) -> list[int]:
    """FLOPs of the whole inference path for each sample alone (batch 1; every sliding window counts)."""
    device = model_device(seg)
    return [count_flops(infer, seg, s.image[None].to(device), s.mask[None].to(device), oracle)[0] for s in samples]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (what the paper's "± std" columns report)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def inputs_from_args(
    cfg: dict, shape: Sequence[int] | None, data_root: str | None, split: str, limit: int | None = None
) -> list[Sample]:
    """``--shape H W`` gives one synthetic sample; otherwise the dataset split (``--data-root`` or config root)."""
    if shape is not None:
        return [synthetic_sample(shape)]
    return load_samples(cfg, data_root, split, limit)


def load_for_timing(args: argparse.Namespace) -> tuple[nn.Module, dict, list[Sample]]:
    """The model, resolved config and inputs of a one-model timing command (``clustvit bench fps`` /
    ``profile``), set up as every inference entry point runs: glibc malloc tuned, ``--threads`` applied, and
    accelerated (``clustvit.accel.accelerate``: the device's kernels and, for ``--amp``, matmul weights cast
    once to the autocast dtype, ``amp_dtype``) unless ``--no-accel``."""
    tune_malloc()  # fewer page faults: docs/BENCHMARKS.md
    if args.threads:
        torch.set_num_threads(args.threads)
    loading.require_checkpoint(args.config, args.checkpoint)
    seg, cfg = loading.load_model(args.config, args.checkpoint, args.cfg_options, args.device)
    if not args.no_accel:
        device = model_device(seg)
        accelerate(seg, device, amp_dtype(device) if args.amp else None)  # what timing.autocast() runs
    return seg, cfg, inputs_from_args(cfg, args.shape, args.data_root, args.split, args.limit)


def default_work_dir(config: str | Path) -> Path:
    return Path("work_dirs") / Path(config).stem


def save_figure_atomic(fig: object, path: Path) -> None:
    """Save a matplotlib figure through a temporary file and ``os.replace``."""
    with atomic_path(path, suffix=path.suffix) as tmp:  # matplotlib picks the format from the name
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
