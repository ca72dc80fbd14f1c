"""``clustvit policy train CONFIG``: train the CTS baseline's policy network on a dataset's ground truth.

    clustvit policy train CONFIG [--work-dir DIR] [--iters N] [--lr LR] [--batch-size B]
                                 [--init TRUNK_WEIGHTS] [--cfg-options KEY=VALUE ...]

A super-patch (32x32 pixels) is labelled "share" when all its labelled pixels hold one class. Prints
the held-out accuracy next to chance, writes ``policynet.safetensors`` and ``policy_metrics.json``; point
a CTS config at the weights with ``--cfg-options model.backbone.policy_weights=DIR/policynet.safetensors``.
Exit status: 0 written; 2 bad config, data or initial weights (one line).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from clustvit.atomic import write_json_atomic
from clustvit.configs import load_config, save_config
from clustvit.data import build_dataset, collate
from clustvit.models.cts.policy import PolicyNet, save_policy
from clustvit.models.cts.train_policy import evaluate_policy, train_policy


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    t = sub.add_parser("train", help="train a policy net, write DIR/policynet.safetensors",
                       description="Train the CTS policy network on the train split of CONFIG's dataset, score "
                                   "it on val, write DIR/policynet.safetensors and DIR/policy_metrics.json.")
    t.add_argument("config", help="any config whose `data` names the dataset (e.g. a CTS config)")
    t.add_argument("--work-dir", help="output folder (default: work_dirs/policynet_<config name>)")
    t.add_argument("--iters", type=int, default=10_000, help="training iterations (default: 10000)")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate, poly decay (default: 1e-3)")
    t.add_argument("--batch-size", type=int, help="default: the config's data.batch_size")
    t.add_argument("--init", help="trunk weights to start from (timm efficientnet_lite0 or a policy net)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    t.set_defaults(func=train)


def train(args: argparse.Namespace) -> int:
    """Train on the train split of the config's dataset, score on val, save; returns 0.

    Writes ``policynet.safetensors`` (what a CTS config's ``model.backbone.policy_weights`` points at),
    ``policy_metrics.json`` (config, iterations, lr, the val scores, the weights' path) and the resolved
    config into the work dir. A bad config or data raises ValueError / FileNotFoundError first."""
    cfg = load_config(args.config, args.cfg_options)
    data = cfg["data"]
    seed = cfg.get("runtime", {}).get("seed", 0)
    torch.manual_seed(seed)
    work = Path(args.work_dir) if args.work_dir else Path("work_dirs") / f"policynet_{Path(args.config).stem}"
    work.mkdir(parents=True, exist_ok=True)
    save_config(cfg, work)

    train_set, val_set = build_dataset(data, "train"), build_dataset(data, "val")
    workers = data.get("num_workers", 0)
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size or data.get("batch_size", 8), shuffle=True, drop_last=True,
        num_workers=workers, collate_fn=collate, generator=torch.Generator().manual_seed(seed),
    )
    val_loader = DataLoader(val_set, batch_size=data.get("val_batch_size", 1), num_workers=workers,
                            collate_fn=collate)

    def epochs() -> Iterator[dict]:
        # A new augmentation draw every pass over the data.
        for epoch in itertools.count():
            train_set.set_epoch(epoch)
            yield from train_loader

    model = PolicyNet.from_pretrained(args.init, allow_missing_head=True) if args.init else PolicyNet()
    print(f"policy net: {len(train_set)} train / {len(val_set)} val images, {args.iters} iterations")
    train_policy(model.to(args.device), epochs(), iters=args.iters, lr=args.lr, log=print)
    metrics = evaluate_policy(model, val_loader)
    print("val super-patches: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in metrics.items()))
    save_policy(model, work / "policynet.safetensors")
    result = {"config": str(args.config), "iters": args.iters, "lr": args.lr, "val": metrics,
              "weights": str(work / "policynet.safetensors")}
    write_json_atomic(work / "policy_metrics.json", result)
    print(f"wrote {work / 'policynet.safetensors'}")
    return 0
