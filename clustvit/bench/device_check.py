"""What ``clustvit bench device`` measures, as functions that run the same on CPU and CUDA.

Correctness (batch invariance, host synchronisations per forward), inference and training-step timing,
and the training paths that only a GPU exercises in earnest (fp16 with ``GradScaler``, DDP). Every
function takes a built model and device tensors; ``clustvit.bench.device_run`` builds the models, orders
the sections and writes the report. ClustViT's clusters come from the masks (oracle, ``clustvit.bench.common``) everywhere, so
that random weights still merge what a trained Cluster module would.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from clustvit.accel import accelerate
from clustvit.bench.common import Sample, forward_pass, infer
from clustvit.bench.timing import autocast, synchronize, time_once
from clustvit.models.build import build_segmentor
from clustvit.models.oracle import oracle_loss as oracle_loss_dict

Batch = tuple[Tensor, Tensor]  # (B, 3, H, W) float 0..255 images, (B, H, W) int64 masks


def strict_fp32() -> None:
    """float32 means float32: no TF32 in CUDA matmuls or cuDNN convolutions (the parity tolerances)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def cycle_batches(samples: Sequence[Sample], batch_size: int, count: int, device: torch.device) -> list[Batch]:
    """``count`` batches of ``batch_size`` samples taken in turn from ``samples`` (repeated as needed).

    Batch j holds samples ``j*B, j*B+1, ...`` modulo their number, so with 5 samples and B = 1 or 8 the
    first 5 batches all differ (other merged lengths for ClustViT).
    """
    n = len(samples)
    batches = []
    for j in range(count):
        group = [samples[(j * batch_size + t) % n] for t in range(batch_size)]
        batches.append((torch.stack([s.image for s in group]).to(device), torch.stack([s.mask for s in group]).to(device)))
    return batches


def inference_copy(seg: nn.Module, device: torch.device, dtype: torch.dtype | None, compile_backend: str | None) -> nn.Module:
    """A copy of ``seg`` set up for inference by ``clustvit.accel.accelerate``.

    Args:
        dtype: None for float32, else the autocast dtype its matmul weights are stored in.
        compile_backend: None (eager), ``"inductor"`` (``accelerate(..., compile=True)``, what users get),
            or a cheaper ``torch.compile`` backend (``"eager"``, ``"aot_eager"``: the CPU smoke run) applied
            to the same parts (backbone and head).
    """
    model = copy.deepcopy(seg)
    if compile_backend in (None, "inductor"):
        return accelerate(model, device, dtype, compile=compile_backend == "inductor")
    accelerate(model, device, dtype)
    for part in (model.backbone, model.decode_head):
        part.compile(backend=compile_backend, dynamic=None)
    return model


def graphs_compiled() -> int | None:
    """Graphs torch.compile has compiled so far in this process (None where this torch does not say)."""
    try:
        from torch._dynamo.utils import counters  # not public API: only counted, never relied on
    except ImportError:
        return None
    return int(counters["stats"].get("unique_graphs", 0))


def count_host_syncs(device: torch.device, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int | None:
    """Host synchronisations that ``fn(*args, **kwargs)`` makes on a CUDA device
    (``torch.cuda.set_sync_debug_mode``).

    Each synchronising operation (a device-to-host copy such as ``.tolist()``, ``.item()``, ``nonzero``)
    raises one warning in "warn" mode; they are counted. None off CUDA.
    """
    if device.type != "cuda":
        return None
    synchronize(device)  # (an explicit synchronize is not counted anyway; this one keeps the count to fn)
    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(before)
    synchronize(device)
    return sum("synchroniz" in str(w.message) for w in caught)


def time_inference(seg: nn.Module, batches: Sequence[Batch], amp: bool, iters: int, warmup: int) -> dict[str, Any]:
    """img/s of ``iters`` synchronised forwards (``bench.infer``, oracle clusters) cycling over ``batches``.

    The warm-up runs every batch at least once (``warmup`` calls at least), so that a compiled model has
    seen every shape it will be timed on; graphs compiled during the timed loop are counted.
    """
    n = len(batches)
    with autocast(batches[0][0].device, amp):
        for i in range(max(warmup, n)):
            infer(seg, *batches[i % n], oracle=True)
    graphs = graphs_compiled()
    timed = [batches[i % n] for i in range(iters)]
    # One synchronised span over all iterations (not one per batch): the device keeps its queue full.
    seconds = time_once(lambda: forward_pass(seg, timed, oracle=True, amp=amp), batches[0][0].device)
    images = sum(int(b[0].shape[0]) for b in timed)
    after = graphs_compiled()
    return {
        "img_s": images / seconds,
        "ms_per_batch": 1000.0 * seconds / iters,
        "iters": iters,
        "batch": int(batches[0][0].shape[0]),
        "graphs_compiled_while_timed": None if graphs is None or after is None else after - graphs,
    }


def oracle_loss(seg: nn.Module, images: Tensor, masks: Tensor) -> Tensor:
    """``Segmentor.loss`` (pixel CE + weighted clustering CE) with ClustViT's clusters from the masks."""
    return oracle_loss_dict(seg, images, masks)["loss"]


class LossModule(nn.Module):
    """:func:`oracle_loss` as a forward, so that DDP sees (and synchronises) the step."""

    def __init__(self, seg: nn.Module) -> None:
        super().__init__()
        self.seg = seg

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        return oracle_loss(self.seg, images, masks)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """The paper's optimiser (SGD, lr 1e-3, momentum 0.9, no weight decay)."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)


def time_train_step(seg: nn.Module, batch: Batch, iters: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """ms per training step (forward, backward, SGD step) under bf16 autocast, float32 master weights."""
    model = copy.deepcopy(seg).train()
    optimizer = sgd(model)
    images, masks = batch

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = oracle_loss(model, images, masks)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(warmup):
        step()
    losses: list[Tensor] = []
    seconds = time_once(lambda: losses.extend(step() for _ in range(iters)), device)
    last = float(losses[-1])
    return {"ms_per_step": 1000.0 * seconds / iters, "img_s": iters * images.shape[0] / seconds, "iters": iters,
            "batch": int(images.shape[0]), "last_loss": last, "loss_finite": bool(torch.isfinite(torch.tensor(last)))}


def _params_changed(model: nn.Module, before: list[Tensor]) -> bool:
    return any(not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))


def fp16_gradscaler_run(seg: nn.Module, batch: Batch, iters: int, device: torch.device,
                        max_skipped: int = 24) -> dict[str, Any]:
    """fp16 autocast steps with ``torch.amp.GradScaler`` (default settings, as the trainer) until ``iters``
    steps were applied: losses, scales, skipped steps, and whether the weights moved.

    The scaler skips a step whose scaled gradients overflowed and halves its scale (from 2^16 by
    default, too much for most models' first steps), so up to ``max_skipped`` more steps may run.
    Passes when every loss is finite and ``iters`` steps were applied.
    """
    model = copy.deepcopy(seg).train()
    optimizer = sgd(model)
    scaler = torch.amp.GradScaler(device.type)
    before = [p.detach().clone() for p in model.parameters()]
    losses, scales, applied, skipped = [], [], 0, 0
    while applied < iters and skipped <= max_skipped:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16):
            loss = oracle_loss(model, *batch)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scale = float(scaler.get_scale())
        scaler.update()
        if float(scaler.get_scale()) < scale:  # update() lowers the scale exactly when the step was skipped
            skipped += 1
        else:
            applied += 1
        losses.append(float(loss.detach()))
        scales.append(scale)
    changed = _params_changed(model, before)
    finite = all(torch.isfinite(torch.tensor(losses)).tolist())
    return {"passed": finite and applied >= iters and changed and scaler.is_enabled(), "losses": losses,
            "scales": scales, "steps_applied": applied, "steps_skipped": skipped, "weights_changed": changed,
            "iters": iters}


def ddp_run(seg: nn.Module, batch: Batch, iters: int, device: torch.device) -> dict[str, Any]:
    """A few bf16 DDP training steps in a world of one process (NCCL on CUDA, gloo on CPU).

    The process group is set up from a ``file://`` store in a fresh temporary folder and torn down
    afterwards. Passes when every loss is finite, the weights moved and an all-reduce returns its input.
    """
    if dist.is_initialized():
        raise RuntimeError("ddp_run: a process group is already initialised in this process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory(prefix="clustvit_ddp_") as tmp:
        dist.init_process_group(backend, init_method=f"file://{Path(tmp) / 'store'}", rank=0, world_size=1)
        try:
            model = copy.deepcopy(seg).train()
            ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
            # ClustViT: a batch that reduces no image leaves the Regenerator unused (as the trainer allows).
            ddp = DistributedDataParallel(LossModule(model), device_ids=ids, find_unused_parameters=model.num_clusters > 0)
            optimizer = sgd(model)
            before = [p.detach().clone() for p in model.parameters()]
            losses = []
            for _ in range(iters):
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = ddp(*batch)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            probe = torch.full((2,), 3.0, device=device)
            dist.all_reduce(probe)
            reduced = probe.tolist()
            got_backend = str(dist.get_backend())
        finally:
            dist.destroy_process_group()
    changed = _params_changed(model, before)
    finite = all(torch.isfinite(torch.tensor(losses)).tolist())
    return {"passed": finite and changed and reduced == [3.0, 3.0] and got_backend == backend, "backend": got_backend,
            "losses": losses, "weights_changed": changed, "all_reduce": reduced, "iters": iters}


@torch.no_grad()
def batch_invariance(seg: nn.Module, batch: Batch) -> dict[str, Any]:
    """Logits of a batch against each image run alone (``bench.infer``, oracle clusters).

    Passes when the logits agree within ``atol = rtol = 1e-4`` and 0 predicted pixels differ.
    ``pixels_at_float_ties``: differing pixels whose top-2 margin (alone) is within twice the largest
    logit difference, i.e. the ones float noise can flip.
    """
    images, masks = batch
    batched = infer(seg, images, masks, oracle=True).float()  # (B, n_cls, H, W)
    alone = torch.cat([infer(seg, images[b : b + 1], masks[b : b + 1], oracle=True) for b in range(images.shape[0])]).float()
    return compare_predictions(batched, alone)


def compare_predictions(batched: Tensor, alone: Tensor) -> dict[str, Any]:
    """Logits (B, n_cls, H, W) of a batch against the same images alone: see :func:`batch_invariance`."""
    err = float((batched - alone).abs().max())
    differ = batched.argmax(1) != alone.argmax(1)  # (B, H, W)
    top2 = alone.topk(2, dim=1).values  # (B, 2, H, W)
    ties = differ & (top2[:, 0] - top2[:, 1] <= 2 * err)
    close = bool(torch.allclose(batched, alone, atol=1e-4, rtol=1e-4))
    pixels = int(differ.sum())
    return {"passed": close and pixels == 0, "max_error": err, "pixels_differ": pixels,
            "pixels_at_float_ties": int(ties.sum()), "pixels": int(differ.numel())}


@torch.no_grad()
def edge_batch_invariance(device: torch.device, seed: int = 0) -> dict[str, Any]:
    """A tiny ClustViT + UPerHead on a batch holding an unreduced image (all kept) and an image all in
    one cluster (unreduced too) beside reduced ones: each image's maps and logits equal its batch-1 result,
    with oracle ids and with the Cluster module's own (``tests/test_models.py`` on any device)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = dict(backbone=dict(type="ClustViT", embed_dim=32, depth=3, num_heads=2, img_size=64, out_indices=(0, 1, 2),
                             num_clusters=3, injection_point=1, cluster_mlp_size=16),
               decode_head=dict(type="UPerHead", channels=8), num_classes=4)
    seg = build_segmentor(cfg).eval()
    seg.backbone.cluster.fc2.bias += torch.randn(4, generator=g) * 3  # vary the arg-max mix
    seg = seg.to(device)
    B = 4
    images = torch.randint(0, 256, (B, 3, 64, 80), generator=g).float().to(device)
    ids = torch.randint(0, 4, (B, 20), generator=g)
    ids[0] = 0  # unreduced: all kept
    ids[1] = 2  # unreduced: all in one cluster
    worst: dict[str, Any] = {"passed": True, "max_error": 0.0, "pixels_differ": 0, "pixels_at_float_ties": 0, "pixels": 0}
    for oracle_ids in (ids.to(device), None):
        batched = seg.backbone(seg.normalise(images), cluster_ids=oracle_ids)
        logits = seg.decode_head(batched.features)
        singles, same, feat_err = [], True, 0.0
        for b in range(B):
            one = None if oracle_ids is None else oracle_ids[b : b + 1]
            alone = seg.backbone(seg.normalise(images[b : b + 1]), cluster_ids=one)
            same &= bool(torch.equal(alone.cluster_ids[0], batched.cluster_ids[b]))
            for fa, fb in zip(alone.features, batched.features):
                feat_err = max(feat_err, float((fa[0] - fb[b]).abs().max()))
                same &= bool(torch.allclose(fa[0], fb[b], atol=1e-5, rtol=1e-4))
            singles.append(seg.decode_head(alone.features))
        res = compare_predictions(logits, torch.cat(singles))
        worst = {"passed": worst["passed"] and res["passed"] and same,
                 "max_error": max(worst["max_error"], res["max_error"], feat_err),
                 **{k: worst[k] + res[k] for k in ("pixels_differ", "pixels_at_float_ties", "pixels")}}
    return worst
