"""test.py's logic: build the model, load a checkpoint (ours or official), evaluate, report, save JSON."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from dynseg.atomic import write_json_atomic
from dynseg.config import Config
from dynseg.engine.evaluate import evaluate


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


def run_test(cfg: Config, checkpoint: str | os.PathLike, work_dir: str | os.PathLike,
             show_dir: str | None = None, out_dir: str | None = None, amp: bool = False,
             split: str = "test") -> dict[str, Any]:
    """Evaluates `checkpoint` on the config's test split; writes ``results.json`` into `work_dir`.

    Returns:
        The metrics (see ``dynseg.engine.evaluate.evaluate``) plus ``classes`` and ``checkpoint``.
    """
    from dynseg.accel import accelerate
    from dynseg.data import build_dataset
    from dynseg.loading import build_model
    from dynseg.models.amp import amp_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg, checkpoint, device)
    accelerate(model, device, amp_dtype(device) if amp else None)
    dataset = build_dataset(cfg["data"], split)
    if dataset.num_classes != model.num_classes:
        raise ValueError(f"{checkpoint}: the model predicts {model.num_classes} classes but the "
                         f"{cfg['data']['type']} {split} set has {dataset.num_classes}")
    metrics = evaluate(model, dataset, device, amp=amp, show_dir=show_dir, out_dir=out_dir, progress=True)
    classes = list(dataset.classes)
    print(format_results(metrics, classes), flush=True)
    result = {"checkpoint": str(checkpoint), "split": split, "classes": classes,
              **{k: _jsonable(v) for k, v in metrics.items()}}
    write_json_atomic(Path(work_dir) / "results.json", result)  # creates work_dir if needed
    return result
