"""The training loop, top to bottom: setup, data, model, optimizer, resume, loop (nanoGPT style).

Reproducibility contract (CPU): every random choice derives from ``(runtime.seed, iteration)``:
the data order and each sample's augmentation (``clustvit.engine.sampler``) and the model's own
randomness (dropout, drop-path: the torch RNG is reseeded at the start of every iteration). A run
resumed from a checkpoint therefore computes bit-identical weights to an uninterrupted one.

Robustness contract: a run holds an exclusive lock on its work dir (``clustvit.engine.lock``) for its whole
life, so a second run there fails at once instead of writing the same checkpoints. A stop signal
(``clustvit.engine.stop``) ends the run after the current step with a checkpoint and ``TrainingStopped``;
the resumed run then computes the same weights and logs as one that was never stopped.
"""

from __future__ import annotations

import functools
import math
import signal
import socket
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from clustvit.accel.dtype import amp_dtype, warn_if_emulated
from clustvit.configs import Config, save_config
from clustvit.convert.weights import load_for_finetune, load_pretrained_backbone, load_strict
from clustvit.data import build_dataset, collate
from clustvit.engine import distributed
from clustvit.engine.checkpoint import find_latest, list_checkpoints, rng_state, save_checkpoint
from clustvit.engine.evaluate import TokenCounter, evaluate
from clustvit.engine.lock import WorkDirLock, WorkDirLockedError
from clustvit.engine.logging import RunLogger
from clustvit.engine.sampler import IterationBatchSampler
from clustvit.engine.schedule import poly_lr_curve
from clustvit.engine.stop import DEFAULT_STOP_SIGNALS, StopRequest, WorkerSignals, parse_signals
from clustvit.loading import is_named_source, resolve
from clustvit.models.build import build_segmentor


class NonFiniteLossError(RuntimeError):
    """Training hit a NaN/inf loss; the message names the iteration, the term and the last checkpoint."""


class PretrainedUnavailableError(RuntimeError):
    """``runtime.require_pretrained`` is set and the pretrained weights cannot be read."""


class TrainingStopped(RuntimeError):
    """A stop signal ended the run after a complete step and its checkpoint; ``--resume`` continues it.

    Attributes:
        signal: the signal received (on this rank, or on another one under torchrun).
        iteration: completed iterations, the same on every rank.
        checkpoint: the checkpoint written (None on ranks other than 0, which do not write).
    """

    def __init__(self, message: str, sig: signal.Signals | None, iteration: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signal, self.iteration, self.checkpoint = sig, iteration, checkpoint


def _loader_worker_init(lock: WorkDirLock, signals: WorkerSignals, worker_id: int) -> None:
    """DataLoader worker set-up: the main process alone handles stop signals and holds the lock."""
    signals.worker_init()
    lock.close_inherited()  # else a SIGKILLed run's lock lives on until its workers notice and exit


class _LossStep(nn.Module):
    """Runs ``segmentor.loss`` through ``forward`` so that DDP sees (and synchronises) the step."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: Tensor, masks: Tensor) -> dict[str, Tensor]:
        return self.segmentor.loss(images, masks)


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    """The torch seed of one iteration on one rank (dropout / drop-path draws)."""
    return (seed * 1_000_003 + iteration) * 1_009 + rank


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (the paper's) or AdamW (for quick from-scratch demos); lr is set per step from the curve."""
    kind = cfg.get("type", "SGD")
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "SGD":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                               weight_decay=cfg.get("weight_decay", 0.0), nesterov=cfg.get("nesterov", False))
    if kind == "AdamW":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.01))
    raise ValueError(f"optimizer.type: {kind!r} unknown, expected 'SGD' or 'AdamW'")


def init_pretrained(model: nn.Module, url: str | None, required: bool, log: RunLogger) -> None:
    """Loads ImageNet weights into the backbone; offline, warns and keeps random init unless required."""
    if not url:
        return

    local = Path(url).is_file() or Path(torch.hub.get_dir(), "checkpoints", Path(url).name).is_file()
    if not local and not url.startswith(("http://", "https://")):
        err: Exception | None = FileNotFoundError(f"{url}: no such file")
    else:
        timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # offline machines: fail in seconds, not after the TCP default
        try:
            for line in load_pretrained_backbone(model.backbone, url):
                log.message(f"pretrained: {line}")
            log.message(f"pretrained: loaded {url}")
            return
        except Exception as e:  # offline, HTTP error, unreadable file: all end here with the same advice
            err = e
        finally:
            socket.setdefaulttimeout(timeout)
    text = f"model.pretrained: cannot load {url} ({type(err).__name__}: {err})"
    if required:
        raise PretrainedUnavailableError(text)
    log.message(f"WARNING: {text}; training from random initialisation "
                "(set runtime.require_pretrained=True to make this an error)")


def init_from(model: nn.Module, source: str, log: RunLogger) -> None:
    """Starts from a whole-segmentor checkpoint (``runtime.load_from``: a file, zoo name or hub folder) whose
    class count may differ: everything loads strictly but the class-specific head keys, which keep their
    initialisation; one line names them. A zoo checkpoint is downloaded once (``clustvit.loading.resolve``).

    Raises:
        clustvit.convert.weights.CheckpointError: the checkpoint does not fit (one line, first keys named).
    """
    path = resolve(source).checkpoint if is_named_source(source) else source
    log.message(load_for_finetune(model, path).summary(source))


def _build_data(cfg: Config, split: str, seed: int) -> Any:
    """The split's dataset; its augmentation seed is the run seed unless dataset_kwargs sets one."""

    data = dict(cfg["data"])
    data["dataset_kwargs"] = {"aug_seed": seed, **data.get("dataset_kwargs", {})}
    return build_dataset(data, split)


def train(cfg: Config, work_dir: str | Path, amp: bool = False, resume: bool = False,
          tensorboard: bool = True, stop_signals: tuple[str, ...] = DEFAULT_STOP_SIGNALS) -> dict[str, Any]:
    """Trains the config's model for ``schedule.max_iters`` iterations; returns a short summary.

    Args:
        cfg: resolved, validated config (``clustvit.configs.loader.load_config``).
        work_dir: run folder: resolved config, checkpoints, logs.
        amp: autocast in ``accel.amp_dtype(device)`` (bfloat16; float16 + GradScaler on GPUs without bf16).
        resume: continue from the latest complete checkpoint in `work_dir` (fresh start if none).
        tensorboard: write TensorBoard scalars.
        stop_signals: signal names that stop the run gracefully (after the current step, with a
            checkpoint, raising TrainingStopped); ``()`` leaves every signal its usual action.

    Raises:
        WorkDirLockedError: another live run holds `work_dir` (nothing was read or written).
        TrainingStopped: a stop signal arrived; the checkpoint of the last complete step is written.
        NonFiniteLossError: a NaN/inf loss, unless ``runtime.skip_nonfinite``.
        clustvit.atomic.WriteError: a checkpoint or log line the disk would not take (full, read-only).
    """
    signals = parse_signals(stop_signals)
    dist_info = distributed.setup()
    work = Path(work_dir)
    lock = WorkDirLock(work)
    refused: WorkDirLockedError | None = None
    if dist_info.is_main:  # the ranks share one work dir: rank 0 holds it for all of them
        try:
            lock.acquire()
        except WorkDirLockedError as e:
            refused = e
    if distributed.any_rank(refused is not None, dist_info.device):
        raise refused or WorkDirLockedError(f"{work}: in use by another run (rank 0 could not lock it)")
    workers = WorkerSignals(signals) if cfg["data"].get("num_workers", 0) else None
    try:
        with StopRequest(signals) as stop:
            return _train(cfg, work, dist_info, amp, resume, tensorboard, stop, lock, workers)
    finally:
        if workers is not None:
            workers.release()
        lock.release()


def _train(cfg: Config, work: Path, dist_info: distributed.DistInfo, amp: bool, resume: bool, tensorboard: bool,
           stop: StopRequest, lock: WorkDirLock, worker_signals: WorkerSignals | None) -> dict[str, Any]:
    """`train`'s body, run while the work dir is locked and the stop signals are caught."""

    # --- setup -------------------------------------------------------------------------------
    device, rank, world = dist_info.device, dist_info.rank, dist_info.world_size
    sched, rt, data_cfg = cfg["schedule"], cfg["runtime"], cfg["data"]
    seed, max_iters = rt.get("seed", 0), sched["max_iters"]
    if not resume and list_checkpoints(work):
        # Starting over beside them would mix two runs' checkpoints (and --resume would pick the wrong one).
        raise ValueError(f"{work}: holds checkpoints of an earlier run ({list_checkpoints(work)[-1][1].name}); "
                         "pass --resume to continue it, or choose another --work-dir")
    latest = find_latest(work) if resume else None
    start_iter = latest[1]["iter"] if latest else 0
    log = RunLogger(work, max_iters, start_iter, enabled=dist_info.is_main, tensorboard=tensorboard)
    if resume and latest is None:
        log.message(f"--resume: no complete checkpoint in {work}, starting from iteration 0")

    # --- data: the sampler reproduces the order of an uninterrupted run from start_iter on --------
    train_set = _build_data(cfg, "train", seed)
    val_every = sched.get("val_interval", max_iters + 1)
    val_set = _build_data(cfg, "val", seed) if val_every <= max_iters else None
    batch_size = data_cfg["batch_size"]  # per process: "1xb8" = 1 process x 8 images
    sampler = IterationBatchSampler(len(train_set), batch_size, seed, start_iter, max_iters, rank, world)
    workers = data_cfg.get("num_workers", 0)
    init = None if worker_signals is None else functools.partial(_loader_worker_init, lock, worker_signals)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0, worker_init_fn=init)

    # --- model, optimizer, lr curve, grad scaler ---------------------------------------------------
    torch.manual_seed(seed)  # identical initialisation in every process and every run
    load_from = rt.get("load_from")
    model_cfg = cfg["model"]
    if load_from and model_cfg["backbone"].get("policy_weights"):
        # The whole-segmentor checkpoint holds CTS's policy net: its separate file is not needed (as in loading).
        model_cfg = {**model_cfg, "backbone": {**model_cfg["backbone"], "policy_weights": None}}
    model = build_segmentor(model_cfg).to(device)
    optimizer = build_optimizer(model, cfg["optimizer"])
    lr_curve = poly_lr_curve(cfg["optimizer"]["lr"], max_iters, sched.get("power", 0.9),
                             sched.get("min_lr", 1e-4), sched.get("warmup_iters", 0)).tolist()
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)  # float16 needs loss scaling
    if amp and dist_info.is_main:
        warn_if_emulated(device)
    skipped, last_ckpt, pending_val = 0, None, False

    # --- resume, or start from runtime.load_from (--from), or initialise from ImageNet weights ----------
    if latest is not None:
        last_ckpt, ckpt = latest

        # A changed architecture: one line listing the mismatched keys, not load_state_dict's traceback.
        load_strict(model, ckpt["model"], source=f"--resume: {last_ckpt}")
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        skipped = ckpt.get("skipped_steps", 0)
        pending_val = bool(ckpt.get("pending_val", False))  # stopped before the validation of start_iter
        changed = sorted(k for k in cfg if ckpt["config"].get(k) != cfg[k])
        if changed:
            log.message(f"WARNING: the config differs from the checkpoint's in: {', '.join(changed)}")
        log.message(f"resumed from {last_ckpt} (iteration {start_iter})")
    elif load_from:  # the ImageNet weights would be overwritten: not fetched
        init_from(model, load_from, log)
    else:
        init_pretrained(model, cfg["model"].get("pretrained"), rt.get("require_pretrained", False), log)
    if dist_info.is_main:  # only now: a --resume that fails on a changed architecture keeps the run's config
        save_config(cfg, work)
    tokens = TokenCounter(model)
    step = _LossStep(model)
    if world > 1:
        # A batch in which ClustViT reduces no image leaves the Regenerator unused: let DDP allow that.
        dynamic = hasattr(model.backbone, "num_clusters")
        step = DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=dynamic)
    if pending_val and val_set is not None:
        model.eval()
        log.log_val(start_iter, evaluate(model, val_set, device, amp=amp, rank=rank, world_size=world))
    model.train()

    def checkpoint(done: int, lr: float, pending_val: bool = False) -> Path | None:
        """Every rank calls it; rank 0 writes ``iter_{done}.pth``, the others wait for it."""
        path = None
        if dist_info.is_main:
            state = {"model": model.state_dict(), "config": cfg, "iter": done,
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                     "rng": rng_state(), "skipped_steps": skipped, "pending_val": pending_val,
                     "scheduler": {"type": "poly", "lr": lr, "next_lr": lr_curve[done] if done < max_iters else None},
                     "data_state": {"seed": seed, "next_position": done * batch_size * world,
                                    "global_batch": batch_size * world}}
            path = save_checkpoint(state, work, keep=rt.get("keep_checkpoints", 3))
        distributed.barrier()
        return path

    # --- the loop ------------------------------------------------------------------------------------
    t_log, n_log = time.perf_counter(), 0
    for it, batch in zip(range(start_iter, max_iters), loader, strict=True):
        torch.manual_seed(iteration_seed(seed, it, rank))
        lr = lr_curve[it]
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W) uint8
        masks = batch["mask"].to(device, non_blocking=True)  # (B, H, W) int64, 255 = ignore
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            losses = step(images, masks)
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        # One all-reduce answers both questions, so every rank takes the same branch and stops after
        # the same step; a signal arriving later in this step is seen at the next one.
        any_bad, stopping = distributed.any_rank_flags([bool(bad), stop.received is not None], device)
        stopping = stopping and it + 1 < max_iters  # a stop during the last step is just the end
        if any_bad:
            term = f"{bad[0]} = {losses[bad[0]].item()}" if bad else "(on another rank)"
            if not rt.get("skip_nonfinite", False):
                log.close()
                raise NonFiniteLossError(
                    f"iteration {it + 1}: non-finite loss {term}; stopped. Last good checkpoint: "
                    f"{last_ckpt or 'none'}. Lower the lr, check the data, or set runtime.skip_nonfinite=True.")
            skipped += 1
            log.message(f"iteration {it + 1}: non-finite loss {term}; step skipped ({skipped} so far)")
            optimizer.zero_grad(set_to_none=True)
        else:
            scaler.scale(losses["loss"]).backward()
            if rt.get("grad_clip"):
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), rt["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        n_log += images.shape[0]
        done = it + 1

        # --- log, checkpoint, validate (a stop checkpoints now and leaves validation to the resume) ---
        if done % sched.get("log_interval", 50) == 0 or done == max_iters:
            names = sorted(losses)
            values = distributed.all_mean(torch.stack([losses[k].detach().float() for k in names]))
            extra = {"tokens_kept": tokens.last_percent(), "img_s": n_log * world / (time.perf_counter() - t_log)}
            if skipped:
                extra["skipped_steps"] = skipped
            log.log_train(done, {k: float(v) for k, v in zip(names, values)}, lr,
                          {k: v for k, v in extra.items() if v is not None and math.isfinite(v)})
            t_log, n_log = time.perf_counter(), 0
        val_due = val_set is not None and done % val_every == 0
        if done % sched.get("checkpoint_interval", max_iters) == 0 or done == max_iters or stopping:
            last_ckpt = checkpoint(done, lr, pending_val=stopping and val_due) or last_ckpt
        if stopping:
            log.close()
            tokens.remove()
            received = stop.received.name if stop.received is not None else "a stop signal on another rank"
            where = str(last_ckpt) if dist_info.is_main else "rank 0's checkpoint"
            raise TrainingStopped(f"{received}: stopped after iteration {done} of {max_iters}, wrote {where}"
                                  f"{' (its validation runs on resume)' if val_due else ''}; "
                                  "continue with --resume" + (f" [rank {rank}]" if world > 1 else ""),
                                  stop.received, done, last_ckpt if dist_info.is_main else None)
        if val_due:
            model.eval()
            metrics = evaluate(model, val_set, device, amp=amp, rank=rank, world_size=world)
            log.log_val(done, metrics)
            model.train()
    log.close()
    tokens.remove()
    distributed.barrier()
    return {"iter": max_iters, "checkpoint": str(last_ckpt) if last_ckpt else None, "skipped_steps": skipped}
