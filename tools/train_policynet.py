"""Train the CTS policy network on a dataset's ground truth and save it for the CTS configs.

    python tools/train_policynet.py CONFIG [--work-dir DIR] [--iters N] [--lr LR] [--batch-size B]
                                    [--init TRUNK_WEIGHTS] [--cfg-options KEY=VALUE ...]

A super-patch (32x32 pixels) is labelled "share" when all its labelled pixels hold one class. Prints
the held-out accuracy next to chance, writes ``policynet.safetensors``; point a CTS config at it with
``--cfg-options model.backbone.policy_weights=DIR/policynet.safetensors``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clustvit.models.cts.train_policy import run  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="any config whose `data` names the dataset (e.g. a CTS config)")
    p.add_argument("--work-dir", help="output folder (default: work_dirs/policynet_<config name>)")
    p.add_argument("--iters", type=int, default=10_000, help="training iterations (default: 10000)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate, poly decay (default: 1e-3)")
    p.add_argument("--batch-size", type=int, help="default: the config's data.batch_size")
    p.add_argument("--init", help="trunk weights to start from (timm efficientnet_lite0 or a policy net)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args(argv)
    return run(args.config, args.work_dir, args.iters, args.lr, args.batch_size, args.init,
               args.cfg_options, args.device)


if __name__ == "__main__":
    main()
