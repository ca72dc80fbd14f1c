"""``python -m clustvit.engine.demo`` (``make demo``): train a small ClustViT and the matching ViT, evaluate, compare.

Both models train from scratch on the synthetic dataset (generated on the fly, nothing to download)
with the real training loop, then run on its held-out test split. The summary table gives each
model's mIoU, the share of tokens ClustViT keeps after merging, and inference speed.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from clustvit.atomic import write_json_atomic
from clustvit.configs import PACKAGED, load_config
from clustvit.engine.evaluate import evaluate
from clustvit.engine.trainer import train

CONFIG_DIR = PACKAGED / "demo"
MODELS = {
    "ClustViT": CONFIG_DIR / "segmenter_clustvit-demo_synthetic.py",
    "ViT": CONFIG_DIR / "segmenter_vit-demo_synthetic.py",
}


def run_one(name: str, config: Path, work_dir: Path, overrides: list[str]) -> dict:
    """Trains one demo model, evaluates its final checkpoint on the synthetic test split."""
    from clustvit.data import build_dataset
    from clustvit.models.build import build_segmentor

    cfg = load_config(config, overrides)
    print(f"\n=== {name}: {config.name} ({cfg['schedule']['max_iters']} iterations) ===", flush=True)
    if work_dir.is_dir():
        shutil.rmtree(work_dir)  # the demo's own output of an earlier demo run: start afresh
    t0 = time.perf_counter()
    summary = train(cfg, work_dir, tensorboard=False)
    train_s = time.perf_counter() - t0
    model = build_segmentor(cfg["model"])
    model.load_state_dict(torch.load(summary["checkpoint"], map_location="cpu", weights_only=True)["model"])
    model.eval()
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="work_dirs/demo", help="where both runs go")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides for both configs, e.g. schedule.max_iters=50 for a smoke test")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the data worker takes the other core, and tiny "
                        "models gain little from a second thread while losing a lot when the CPU is shared)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = [run_one(name, path, Path(args.work_dir) / name, args.cfg_options) for name, path in MODELS.items()]
    num_classes = load_config(MODELS["ViT"], args.cfg_options)["model"]["num_classes"]
    print("\n" + format_table(rows, num_classes))
    print(f"total {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} threads")
    out = Path(args.work_dir) / "demo_results.json"
    write_json_atomic(out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
