"""test.py's logic: build the model, load a checkpoint (ours or official), evaluate, report, save JSON."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from clustvit.accel import accelerate, amp_dtype
from clustvit.atomic import write_json_atomic
from clustvit.configs import Config
from clustvit.data import build_dataset
from clustvit.engine.evaluate import evaluate
from clustvit.loading import build_model, resolve
from clustvit.zoo.classmap import CLASS_MAPS, ClassMapped, OfficialTargets


def format_results(metrics: dict[str, Any], classes: tuple[str, ...] | list[str]) -> str:
    """The per-class IoU/Acc table, then the summary (aAcc, mIoU, mAcc), size recall, tokens, speed."""
    width = max([len(c) for c in classes] + [5])
    rows = [f"| {'class':<{width}} |   IoU  |   Acc  |", f"|{'-' * (width + 2)}|--------|--------|"]
    for name, iou, acc in zip(classes, metrics["IoU"], metrics["Acc"]):
        rows.append(f"| {name:<{width}} | {iou:6.2f} | {acc:6.2f} |")
    rows.append("")
    rows.append(f"aAcc {metrics['aAcc']:.2f}   mIoU {metrics['mIoU']:.2f}   mAcc {metrics['mAcc']:.2f}")
    sizes = [f"{k[len('recall_'):]} {v:.2f}" for k, v in metrics.items() if k.startswith("recall_")]
    rows.append("size-stratified recall (% of object pixels): " + "   ".join(sizes))
    rows.append(f"tokens kept {metrics['tokens_kept']:.1f}%   {metrics['img_s']:.2f} img/s   "
                f"{metrics['num_images']} images")
    return "\n".join(rows)


def _jsonable(value: Any) -> Any:
    """NaN (a class absent from the test set) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def run_test(source: str | os.PathLike | Config, checkpoint: str | os.PathLike | None, work_dir: str | os.PathLike,
             show_dir: str | None = None, out_dir: str | None = None, amp: bool = False,
             split: str = "test", cfg_options: list[str] | None = None,
             official_scoring: bool = True, accel: bool = True) -> dict[str, Any]:
    """Evaluates a model on its config's test split; writes ``results.json`` into `work_dir`.

    Args:
        source: a config path or dict, a zoo name or a hub folder (``clustvit.loading``).
        checkpoint: the weights (``None``: the zoo entry's or folder's own).
        official_scoring: for a checkpoint with a class map (the official SUIM heads), score our labels
            as the official masks have them (SUIM: SR counts as BW), so the mIoU compares with the
            seed's; off: every class of ours counts (SR, which the head cannot predict, scores 0).
        accel: evaluate on the device's fast kernels (``clustvit.accel.accelerate``); False: the plain model.

    Returns:
        The metrics (see ``clustvit.engine.evaluate.evaluate``) plus ``classes``, ``checkpoint``, ``source``,
        ``class_map`` and ``scoring``.
    """

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    r = resolve(source, checkpoint, cfg_options)
    cfg = r.cfg
    model = build_model(cfg, r.checkpoint, device)
    if accel:
        accelerate(model, device, amp_dtype(device) if amp else None)
    dataset = build_dataset(cfg["data"], split)
    scoring = "ours"
    if r.class_map:
        class_map = CLASS_MAPS[r.class_map]
        model = ClassMapped(model, class_map)  # the checkpoint's outputs onto our classes
        if official_scoring and class_map.targets:
            dataset, scoring = OfficialTargets(dataset, class_map), "official"
    if dataset.num_classes != model.num_classes:
        raise ValueError(f"{r.checkpoint}: the model predicts {model.num_classes} classes but the "
                         f"{cfg['data']['type']} {split} set has {dataset.num_classes}")
    metrics = evaluate(model, dataset, device, amp=amp, show_dir=show_dir, out_dir=out_dir, progress=True)
    classes = list(dataset.classes)
    print(format_results(metrics, classes), flush=True)
    if scoring == "official":
        print(f"scored as the official masks label them ({r.class_map}: " +
              ", ".join(f"{classes[a]} counts as {classes[b]}" for a, b in CLASS_MAPS[r.class_map].targets) + ")")
    result = {"source": r.label, "checkpoint": str(r.checkpoint), "split": split, "class_map": r.class_map,
              "scoring": scoring, "classes": classes, **{k: _jsonable(v) for k, v in metrics.items()}}
    write_json_atomic(Path(work_dir) / "results.json", result)  # creates work_dir if needed
    return result
