"""The merge forecast behind ``clustvit data plan``: will ClustViT save anything on these images?

A well-trained Cluster module reproduces the masks' pseudo-labels (``clustvit.models.oracle``), so the
oracle-cluster run of a ClustViT is the forecast of what training would reach. For each k in 1..5 the
whole inference path is counted once per image (``bench.common.flops_per_image`` with oracle clusters,
the same count as ``clustvit bench flops --oracle-clusters``) at the model's own injection point; the
sequence length after merging is read from the backbone's ``tokens_per_block``. It depends on k only.

Every other injection point follows exactly: moving ip by one moves one block between the full sequence
(length ``1 + N``) and the merged one, and a block's FLOPs at length L are ``a * L + b * L^2``
(:class:`BlockCost`, counted on one block at three lengths), so per image

    F(ip') = F(ip) + (ip' - ip) * sum over backbone calls of [cost(1 + N) - cost(merged length)].

Counting does not compute: under :class:`ShapesOnly` the matmuls, convolutions and attention return
zeros of their output's shape and strides (computed on the meta device), which FlopCounterMode counts
from the shapes exactly as if they had run; the data-dependent merge plan is still built from the
real cluster ids. ViT-B at 512² takes ~0.8 s per count on two cores instead of ~5 s.

The speed-up given is the FLOP ratio's inverse: an expectation, not a measurement (measured speed tracks
it closely on CPUs, efficiency ~1; GPUs use short sequences less well, so expect less there).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from clustvit.bench import common as bench
from clustvit.bench.flops import count_flops, flop_formulas
from clustvit.bench.report import cell
from clustvit.models.build import build_segmentor, constructor_params
from clustvit.models.clustvit import ClustViT
from clustvit.models.segmentor import Segmentor
from clustvit.models.vit import VisionTransformer

KS = (1, 2, 3, 4, 5)
PAPER_IP = 3  # the paper's injection point
NEAR_BEST = 0.9  # recommend the smallest k reaching this share of the best reduction
NOT_WORTH = 0.15  # below this FLOP reduction (even at k=5), merging does not pay
PRINTED_IPS = 6  # the table shows ip 1..6; plan.json and the recommendation cover 1..depth-1
# The only keys a ClustViT backbone takes beyond a ViT's (num_clusters, injection_point, cluster_mlp_size).
CLUSTER_KEYS = frozenset(constructor_params(ClustViT)) - frozenset(constructor_params(VisionTransformer))


def clustvit_variant(model_cfg: dict, num_clusters: int) -> dict:
    """A ClustViT ``model`` config with ``num_clusters`` clusters, all else (injection point too) kept."""
    if model_cfg["backbone"].get("type") != "ClustViT":
        raise ValueError(f"the forecast needs a ClustViT model, got backbone type {model_cfg['backbone'].get('type')!r}")
    cfg = copy.deepcopy(model_cfg)
    cfg["backbone"]["num_clusters"] = num_clusters
    return cfg


def vit_variant(model_cfg: dict) -> dict:
    """The ViT a ClustViT ``model`` config is compared with: the same backbone and head, no Cluster module."""
    cfg = copy.deepcopy(model_cfg)
    cfg["backbone"] = {k: v for k, v in cfg["backbone"].items() if k not in CLUSTER_KEYS}
    cfg["backbone"]["type"] = "VisionTransformer"
    cfg["clust_loss_weight"] = 0.0
    return cfg


class ShapesOnly(TorchDispatchMode):
    """Matmuls, convolutions and attention return zeros of their output's shape, dtype and strides.

    Enter it *outside* ``count_flops``: FlopCounterMode then sees every op first and counts it from the
    shapes (the same ops, so the same count as a real run); only the work is skipped. Everything else
    (norms, the merge plan from real cluster ids, resizes) runs as usual.
    """

    def __init__(self) -> None:
        super().__init__()
        # Every op that has a FLOP formula is one whose output shape does not depend on the data.
        self.heavy = frozenset(flop_formulas(count_elementwise=False)) | {
            torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.baddbmm,
            torch.ops.aten.convolution}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func.overloadpacket not in self.heavy:
            return func(*args, **kwargs)
        device = next(t.device for t in (*args, *kwargs.values()) if isinstance(t, Tensor))
        # These ops take their tensors flat (no lists of tensors) and return a tensor or a tuple.
        out = func(*map(_to_meta, args), **{k: _to_meta(v) for k, v in kwargs.items()})  # shapes and strides only
        # Same strides as the real kernel's output: a strided input changes how the next linear layer
        # dispatches (bias added apart), which the elementwise count would see. Left uninitialised:
        # writing zeros into every output was most of the time, and no value steers the path (the
        # cluster ids are the masks').
        def empty(t: Any) -> Any:
            if not isinstance(t, Tensor):
                return t
            return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)

        return type(out)(map(empty, out)) if isinstance(out, tuple | list) else empty(out)


def _to_meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, Tensor) else value


def counting_model(model_cfg: dict, device: str | torch.device = "cpu") -> Segmentor:
    """The segmentor of a ``model`` config for counting (under :class:`ShapesOnly`): built on the meta
    device, then given uninitialised memory, in eval mode. Its outputs are meaningless; its FLOP count is
    exact. (Initialising or zeroing ViT-B's weights would take longer than counting an image.)"""
    with torch.device("meta"):
        seg = build_segmentor({**model_cfg, "pretrained": None})
    return seg.to_empty(device=device).eval()


@dataclass(frozen=True)
class BlockCost:
    """FLOPs of one transformer block on one sequence of length L: ``linear * L + quadratic * L^2``."""

    linear: int  # per token: the linear layers (2 x MACs) and the residual adds
    quadratic: int  # per token pair: QK^T and AV

    def __call__(self, length: int) -> int:
        return self.linear * length + self.quadratic * length * length


def block_cost(block: nn.Module, dim: int, device: str | torch.device = "cpu") -> BlockCost:
    """Count ``block`` (a ``models.vit.Block`` of width ``dim``) on (1, L, dim) inputs at L = 8, 16, and
    check the fit at L = 24 (raises RuntimeError if the count is not ``a * L + b * L^2``)."""
    def flops(length: int) -> int:
        with ShapesOnly():
            return count_flops(block, torch.zeros(1, length, dim, device=device))[0]

    c8, c16, c24 = flops(8), flops(16), flops(24)
    quadratic = (c16 - 2 * c8) // 128  # c(16) - 2 c(8) = 256b - 128b
    cost = BlockCost((c8 - 64 * quadratic) // 8, quadratic)
    if (cost(8), cost(16), cost(24)) != (c8, c16, c24):
        raise RuntimeError(f"block FLOPs {c8}, {c16}, {c24} at 8, 16, 24 tokens are not a * L + b * L^2")
    return cost


@dataclass
class ImageCount:
    """One image through one ClustViT with oracle clusters (every sliding window is one backbone call)."""

    name: str
    flops: int  # the whole inference path at the model's injection point
    full: list[int]  # per backbone call: 1 + N
    merged: list[int]  # per backbone call: the sequence length after merging (tokens_per_block[:, -1])

    def flops_at(self, counted_ip: int, ip: int, cost: BlockCost) -> int:
        """The whole path's FLOPs with the Cluster module after block ``ip`` instead of ``counted_ip``."""
        return self.flops + (ip - counted_ip) * sum(cost(f) - cost(m) for f, m in zip(self.full, self.merged, strict=True))

    @property
    def tokens(self) -> float:
        """Tokens kept: the merged length, averaged over the backbone calls."""
        return float(np.mean(self.merged))

    @property
    def share(self) -> float:
        """Tokens kept as a share of ``1 + N``."""
        return sum(self.merged) / sum(self.full)


@contextmanager
def backbone_tokens(seg: nn.Module) -> Iterator[list[Tensor]]:
    """Collect ``tokens_per_block`` (n, depth) of every backbone call made inside the block, in order."""
    rows: list[Tensor] = []
    handle = seg.backbone.register_forward_hook(lambda _m, _a, out: rows.append(out.tokens_per_block.cpu()))
    try:
        yield rows
    finally:
        handle.remove()


def count_image(seg: nn.Module, sample: bench.Sample) -> ImageCount:
    """FLOPs and tokens of ``sample`` through ``seg`` with oracle clusters (``bench.flops_per_image``)."""
    with ShapesOnly(), backbone_tokens(seg) as rows:
        (flops,) = bench.flops_per_image(seg, [sample], oracle=True)
    tokens = torch.cat(rows)  # (windows, depth)
    return ImageCount(sample.name, int(flops), tokens[:, 0].tolist(), tokens[:, -1].tolist())


def vit_flops(seg: nn.Module, samples: Sequence[bench.Sample]) -> list[int]:
    """The ViT's FLOPs per sample: one count per image size (its cost depends on nothing else)."""
    by_shape: dict[tuple[int, ...], int] = {}
    for s in samples:
        if tuple(s.image.shape) not in by_shape:
            with ShapesOnly():
                by_shape[tuple(s.image.shape)] = bench.flops_per_image(seg, [s])[0]
    return [by_shape[tuple(s.image.shape)] for s in samples]


@dataclass
class Row:
    """One (k, ip) of the plan: means and population standard deviations over the images."""

    k: int
    ip: int
    tokens_mean: float
    tokens_std: float
    share_mean: float  # tokens kept / (1 + N)
    gflops_mean: float
    gflops_std: float
    flop_ratio: float  # mean ClustViT GFLOPs / mean ViT GFLOPs
    speedup: float  # 1 / flop_ratio: the expected speed-up


@dataclass
class Plan:
    """Everything ``clustvit data plan`` reports (``plan.json`` is ``asdict`` of it)."""

    num_images: int
    depth: int
    counted_ip: int  # the injection point counted; the others are derived (module docstring)
    full_tokens: float  # 1 + N, mean over the images
    vit_gflops_mean: float
    vit_gflops_std: float
    block_cost: dict[str, int]
    rows: list[Row]
    per_image: dict[str, dict[str, Any]]  # name -> {"vit_gflops", "full", "tokens": {k: [...]},
    #                                               "gflops": {k: {ip: GFLOPs}}}
    recommendation: list[str] = field(default_factory=list)
    recommended: dict[str, int] | None = None  # {"k", "ip"}; None when merging does not pay
    notes: list[str] = field(default_factory=list)

    def row(self, k: int, ip: int) -> Row:
        return next(r for r in self.rows if r.k == k and r.ip == ip)

    def to_dict(self) -> dict:
        return asdict(self)


def forecast(model_cfg: dict, samples: Sequence[bench.Sample], ks: Sequence[int] = KS,
             progress: Callable[[str], None] | None = None) -> Plan:
    """The merge forecast of a ClustViT ``model`` config on ``samples`` (the test pipeline's images, masks
    at the image's size: ``bench.load_samples``), for every k in ``ks`` and ip in 1..depth-1."""
    if not samples:
        raise ValueError("no images to forecast on")
    counts: dict[int, list[ImageCount]] = {}
    for k in ks:
        seg = counting_model(clustvit_variant(model_cfg, k))
        counts[k] = [count_image(seg, s) for s in samples]
        if progress:
            progress(f"k={k}: {len(samples)} images counted")
    backbone = seg.backbone
    depth, counted_ip = backbone.depth, backbone.injection_point
    cost = block_cost(backbone.blocks[0], backbone.embed_dim)
    vit = [f / 1e9 for f in vit_flops(counting_model(vit_variant(model_cfg)), samples)]
    vit_mean, vit_std = bench.mean_std(vit)

    ips = range(1, depth)
    rows: list[Row] = []
    per_image: dict[str, dict[str, Any]] = {
        s.name: {"vit_gflops": v, "full": counts[ks[0]][i].full, "tokens": {}, "gflops": {}}
        for i, (s, v) in enumerate(zip(samples, vit, strict=True))}
    for k in ks:
        tokens_mean, tokens_std = bench.mean_std([c.tokens for c in counts[k]])
        share = float(np.mean([c.share for c in counts[k]]))
        for c in counts[k]:
            per_image[c.name]["tokens"][k] = c.merged
            per_image[c.name]["gflops"][k] = {ip: c.flops_at(counted_ip, ip, cost) / 1e9 for ip in ips}
        for ip in ips:
            g_mean, g_std = bench.mean_std([per_image[c.name]["gflops"][k][ip] for c in counts[k]])
            ratio = g_mean / vit_mean
            rows.append(Row(k, ip, tokens_mean, tokens_std, share, g_mean, g_std, ratio, 1 / ratio))
    full = float(np.mean([np.mean(c.full) for c in counts[ks[0]]]))
    plan = Plan(len(samples), depth, counted_ip, full, vit_mean, vit_std, asdict(cost), rows, per_image)
    recommend(plan, ks)
    return plan


def recommend(plan: Plan, ks: Sequence[int]) -> None:
    """Fill ``plan.recommendation`` (plain-words lines) and ``plan.recommended``.

    At the paper's ip=3 (or the last block before it on a shallower model): the smallest k whose FLOP
    reduction reaches :data:`NEAR_BEST` of the best k's; with a warning instead when even the largest k
    saves less than :data:`NOT_WORTH`. The best (k, ip) over every injection point is named beside it.
    """
    ip = min(PAPER_IP, plan.depth - 1)
    saved = {k: 1 - plan.row(k, ip).flop_ratio for k in ks}
    best_k = max(ks, key=lambda k: saved[k])
    overall = max(plan.rows, key=lambda r: r.speedup)
    expectation = ("expected speed-up = ViT FLOPs / ClustViT FLOPs: an expectation from the FLOP count, not a "
                   "measurement (measured speed tracks it closely on CPUs, efficiency ~1; less on GPUs)")
    if saved[max(ks)] < NOT_WORTH:
        plan.recommended = None
        plan.recommendation = [
            f"merging will not pay on these images; train the ViT: even k={max(ks)} at ip={ip} saves only "
            f"{saved[max(ks)]:.0%} of the FLOPs ({plan.row(max(ks), ip).share_mean:.0%} of the tokens kept). "
            f"The most any injection point gives is {overall.speedup:.2f}x (k={overall.k}, ip={overall.ip}), "
            "and early injection costs accuracy.",
            expectation]
        return
    k = min(kk for kk in ks if saved[kk] >= NEAR_BEST * saved[best_k])
    r = plan.row(k, ip)
    plan.recommended = {"k": k, "ip": ip}
    plan.recommendation = [
        f"train ClustViT with k={k}, ip={ip}: the smallest k reaching {NEAR_BEST:.0%} of the best reduction at "
        f"ip={ip} (k={best_k}: {saved[best_k]:.0%} fewer FLOPs). With k={k}, {r.share_mean:.0%} of the tokens are "
        f"kept, {r.gflops_mean:.1f} of the ViT's {plan.vit_gflops_mean:.1f} GFLOPs: an expected "
        f"{r.speedup:.2f}x speed-up.",
        f"Earlier injection saves more (most: k={overall.k}, ip={overall.ip}, {overall.speedup:.2f}x) but "
        f"clusters less-formed features; ip={PAPER_IP} is the paper's choice.",
        expectation]


def table_rows(plan: Plan, max_ip: int = PRINTED_IPS) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the printed table (``bench.report.text_table``): every k at ip 1..max_ip."""
    headers = ["k", "ip", "tokens kept", "of 1+N", "GFLOPs", "FLOP ratio", "speed-up"]
    rows = [[str(r.k), str(r.ip), f"{r.tokens_mean:.0f} ± {r.tokens_std:.0f}", f"{r.share_mean:.0%}",
             f"{r.gflops_mean:.2f} ± {r.gflops_std:.2f}", cell(r.flop_ratio), f"{r.speedup:.2f}x"]
            for r in plan.rows if r.ip <= max_ip]
    return headers, rows


def plot(plan: Plan, path: Path, title: str) -> None:
    """Tokens kept per image (share of 1 + N), sorted, one curve per k; saved atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    images = list(plan.per_image.values())
    for k in sorted({r.k for r in plan.rows}):
        shares = sorted(sum(im["tokens"][k]) / sum(im["full"]) for im in images)
        ax.plot(range(1, len(shares) + 1), shares, marker="o" if len(shares) < 30 else None, label=f"k={k}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set(xlabel="image (sorted)", ylabel="tokens kept / (1 + N)", ylim=(0, 1.05), title=title)
    ax.legend()
    bench.save_figure_atomic(fig, path)
    plt.close(fig)
