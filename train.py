"""Train a segmentor: ``python train.py CONFIG [--work-dir DIR] [--amp] [--resume] [--cfg-options k=v ...]``.

Multi-GPU (or multi-process CPU, gloo): ``torchrun --nproc_per_node N train.py CONFIG ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynseg.config import ConfigError, load_config
from dynseg.engine import distributed
from dynseg.engine.trainer import NonFiniteLossError, PretrainedUnavailableError, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config file, e.g. config/demo/segmenter_clustvit-demo_synthetic.py")
    p.add_argument("--work-dir", help="run folder (default: work_dirs/<config name>)")
    p.add_argument("--amp", action="store_true", help="mixed precision: bf16 on CPU, fp16 + grad scaling on CUDA")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. schedule.max_iters=1000 data.batch_size=4")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard event files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    try:
        train(cfg, work_dir, amp=args.amp, resume=args.resume, tensorboard=not args.no_tensorboard)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (PretrainedUnavailableError, ValueError) as e:  # config/data problems found while building
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()  # under torchrun: exiting with the gloo group alive can abort the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
