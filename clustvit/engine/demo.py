"""The demo behind ``clustvit demo`` (``make demo``): train a small ClustViT and the matching ViT, evaluate, compare.

Both models train from scratch on the synthetic dataset (generated on the fly, nothing to download)
with the real training loop, then run on its held-out test split. The summary table gives each
model's mIoU, the share of tokens ClustViT keeps after merging, and inference speed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from clustvit.configs import PACKAGED, load_config
from clustvit.data import build_dataset
from clustvit.engine.evaluate import evaluate
from clustvit.engine.trainer import train
from clustvit.loading import build_model

CONFIG_DIR = PACKAGED / "demo"
MODELS = {
    "ClustViT": CONFIG_DIR / "segmenter_clustvit-demo_synthetic.py",
    "ViT": CONFIG_DIR / "segmenter_vit-demo_synthetic.py",
}


def run_one(name: str, config: Path, work_dir: Path, overrides: list[str]) -> dict:
    """Trains one demo model, evaluates its final checkpoint on the synthetic test split."""
    cfg = load_config(config, overrides)
    print(f"\n=== {name}: {config.name} ({cfg['schedule']['max_iters']} iterations) ===", flush=True)
    if work_dir.is_dir():
        shutil.rmtree(work_dir)  # the demo's own output of an earlier demo run: start afresh
    t0 = time.perf_counter()
    summary = train(cfg, work_dir, tensorboard=False)
    train_s = time.perf_counter() - t0
    model = build_model(cfg, summary["checkpoint"])  # the one loader: strict, every bad key named
    metrics = evaluate(model, build_dataset(cfg["data"], "test"), torch.device("cpu"))
    return {"model": name, "mIoU": metrics["mIoU"], "aAcc": metrics["aAcc"], "tokens_kept": metrics["tokens_kept"],
            "img_s": metrics["img_s"], "train_s": train_s, "iters": cfg["schedule"]["max_iters"],
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def format_table(rows: list[dict], num_classes: int) -> str:
    """The summary table; chance level is what a uniform random guess scores (about 1/K^2 IoU)."""
    lines = ["| model    | mIoU  | aAcc  | tokens kept | img/s | params | train    |",
             "|----------|-------|-------|-------------|-------|--------|----------|"]
    for r in rows:
        lines.append(f"| {r['model']:<8} | {r['mIoU']:5.1f} | {r['aAcc']:5.1f} | {r['tokens_kept']:10.1f}% "
                     f"| {r['img_s']:5.1f} | {r['params_M']:4.2f}M | {r['train_s']:6.1f} s |")
    lines.append(f"(chance: mIoU about {100 / (2 * num_classes - 1):.0f} for {num_classes} balanced classes; "
                 "tokens kept = sequence length after merging / before, CLS and cluster tokens included)")
    return "\n".join(lines)
