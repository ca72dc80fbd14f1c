"""What the efficiency tools share: model loading, benchmark inputs, timing, peak memory, token counts.

The tools (``tools/get_flops.py``, ``get_fps.py``, ``profile_stages.py``, ``count_tokens.py``,
``benchmark.py``) only parse arguments and print; everything measurable lives here so tests can call it.

Oracle clusters (``oracle=True``): ClustViT takes its cluster assignment from the ground-truth masks'
pseudo-labels instead of its Cluster module. It is an upper-bound analysis mode: it shows the reduction
a perfectly trained Cluster module would reach, and lets speed be measured on real images with random
weights. Backbones without clusters ignore the flag.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from clustvit import loading
from clustvit.accel import accelerate
from clustvit.atomic import atomic_path
from clustvit.bench.flops import count_flops
from clustvit.data import build_dataset
from clustvit.data.synthetic import render_scene
from clustvit.inference.runtime import tune_malloc


@dataclass
class Sample:
    """One benchmark input after the test pipeline."""

    image: Tensor  # (3, H, W) float RGB 0..255
    mask: Tensor  # (H, W) int64 at the image's resolution (nearest-resized), 255 = ignore
    name: str


def load_model(
    config: str | Path | dict,
    checkpoint: str | None = None,
    cfg_options: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[nn.Module, dict]:
    """(segmentor in eval mode, resolved config): ``clustvit.loading.load_model``, the one loader.

    Args:
        config: a config file or dict, a zoo name or a hub folder.
        checkpoint: a checkpoint path, or None / "none" for seeded random weights (no pretrained download);
            None after a zoo name or hub folder: its own weights.
    """
    return loading.load_model(config, checkpoint, cfg_options, device, seed)


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
        return seg.predict_logits(images, masks, oracle=True)
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
    """What a timing tool's JSON records about its run: threads, host, torch and the inputs (``add_input_args``)."""
    return {"threads": torch.get_num_threads(), "repeats": args.repeats, "oracle_clusters": args.oracle_clusters,
            "torch": torch.__version__, "host": cpu_name(), "data_root": args.data_root, "split": args.split,
            "shape": args.shape, "limit": args.limit}


def autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """bf16 autocast on CPU and CUDA when ``amp``, else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a timer measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_device(seg: nn.Module) -> torch.device:
    return next(seg.parameters()).device


def run_pass(seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], oracle: bool, amp: bool) -> float:
    """Run every batch once (inputs already on the model's device); return the synchronised seconds."""
    device = model_device(seg)
    synchronize(device)
    t0 = time.perf_counter()
    with autocast(device, amp):
        for images, masks in batches:
            infer(seg, images, masks, oracle)
    synchronize(device)
    return time.perf_counter() - t0


def to_device(batches: Sequence[tuple[Tensor, Tensor]], device: torch.device) -> list[tuple[Tensor, Tensor]]:
    return [(i.to(device), m.to(device)) for i, m in batches]


def summarise_runs(seconds: Sequence[float], num_images: int) -> dict:
    """img/s statistics of timed passes over ``num_images`` images each."""
    rates = [num_images / s for s in seconds]
    return {
        "img_s_median": statistics.median(rates),
        "img_s_mean": statistics.fmean(rates),
        "img_s_std": statistics.pstdev(rates),
        "ms_per_img_median": 1000.0 * statistics.median(seconds) / num_images,
        "runs_s": list(seconds),
        "num_images": num_images,
    }


def measure_fps(
    seg: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], repeats: int = 7, warmup: int = 1,
    oracle: bool = False, amp: bool = False,
) -> dict:
    """Time ``repeats`` passes over all batches after ``warmup`` untimed passes (median and mean img/s)."""
    batches = to_device(batches, model_device(seg))
    for _ in range(warmup):
        run_pass(seg, batches, oracle, amp)
    seconds = [run_pass(seg, batches, oracle, amp) for _ in range(repeats)]
    return summarise_runs(seconds, sum(int(i.shape[0]) for i, _ in batches))


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the peak may then read low
        pass


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Measure the extra memory the block needs at its peak, in MiB (``result["peak_mib"]``).

    CUDA: ``max_memory_allocated`` above what was allocated before. CPU: the process's peak resident
    set (VmHWM, reset through /proc/self/clear_refs) above the resident set before, after returning
    freed heap to the OS (glibc ``malloc_trim``); NaN where Linux does not allow the reset.
    """
    result: dict = {"peak_mib": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        return
    try:
        _malloc_trim()  # hand freed heap back to the OS so the pass's own peak shows in the RSS
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        before = _proc_status_kib("VmRSS")
    except OSError:
        before = None
    yield result
    if before is not None:
        result["peak_mib"] = (_proc_status_kib("VmHWM") - before) / 1024


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


def add_input_args(parser: argparse.ArgumentParser) -> None:
    """The input flags every efficiency tool shares."""
    parser.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), help="one synthetic HxW input")
    parser.add_argument("--data-root", help="dataset root (default: the config's data.root)")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--oracle-clusters", action="store_true",
                        help="ClustViT clusters from the masks' pseudo-labels (upper-bound analysis mode)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")


def add_timing_args(parser: argparse.ArgumentParser, output: str) -> None:
    """CONFIG, CHECKPOINT, ``--amp``, ``--threads``, ``--work-dir`` (where ``output`` goes) and the input
    flags: what the one-model timing tools (get_fps, profile_stages) share."""
    parser.add_argument("config", help="config file, zoo name (python -m clustvit.zoo list) or hub folder")
    parser.add_argument("checkpoint", nargs="?",
                        help="checkpoint path, or 'none' for random weights (optional after a zoo name / hub folder)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--no-accel", action="store_true", help="time the plain model, without clustvit.accel's kernels")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--work-dir", help=f"where {output} goes (default: work_dirs/<config name>)")
    add_input_args(parser)


def load_for_timing(args: argparse.Namespace) -> tuple[nn.Module, dict, list[Sample]]:
    """The model, resolved config and inputs of a one-model timing tool (:func:`add_timing_args`), set up
    as every inference entry point runs: glibc malloc tuned, ``--threads`` applied, and accelerated
    (``clustvit.accel.accelerate``: the device's kernels and, for ``--amp``, matmul weights cast to bf16 once)
    unless ``--no-accel``."""
    tune_malloc()  # fewer page faults: docs/BENCHMARKS.md
    if args.threads:
        torch.set_num_threads(args.threads)
    loading.require_checkpoint(args.config, args.checkpoint)
    seg, cfg = load_model(args.config, args.checkpoint, args.cfg_options, args.device)
    if not args.no_accel:
        accelerate(seg, model_device(seg), torch.bfloat16 if args.amp else None)  # bf16: what autocast() runs
    return seg, cfg, inputs_from_args(cfg, args.shape, args.data_root, args.split, args.limit)


def default_work_dir(config: str | Path) -> Path:
    return Path("work_dirs") / Path(config).stem


def save_figure_atomic(fig: object, path: Path) -> None:
    """Save a matplotlib figure through a temporary file and ``os.replace``."""
    with atomic_path(path, suffix=path.suffix) as tmp:  # matplotlib picks the format from the name
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
