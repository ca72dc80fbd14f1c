"""``clustvit train CONFIG [--work-dir DIR] [--amp] [--resume] [--cfg-options k=v ...]``: train a segmentor.

Several processes (GPUs, or gloo on CPU): ``torchrun --nproc_per_node N -m clustvit train CONFIG ...``
(the seed's ``torchrun ... train.py CONFIG`` is the same command).

SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 stop the run after the current step with a checkpoint (exit 75);
``--resume`` then continues it exactly. One run at a time per work dir: a second one exits at once.

Exit status: 0 done; 2 bad config or data, or the work dir is in use by another run; 3 non-finite loss;
4 a checkpoint or log the disk would not take (full, quota, read-only); 75 stopped by a signal after
writing a checkpoint (EX_TEMPFAIL: run the same command with --resume to continue).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clustvit.atomic import WriteError
from clustvit.configs import ConfigError, load_config
from clustvit.engine import distributed
from clustvit.engine.lock import WorkDirLockedError
from clustvit.engine.stop import DEFAULT_STOP_SIGNALS, parse_signals
from clustvit.engine.trainer import NonFiniteLossError, PretrainedUnavailableError, TrainingStopped, train

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_WRITE = 4
EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL: "try again later", which a requeued job does with --resume


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("config", help="config file or name, e.g. segmenter_clustvit-demo_synthetic (clustvit configs)")
    p.add_argument("--work-dir", help="run folder (default: work_dirs/<config name>)")
    p.add_argument("--amp", action="store_true", help="mixed precision: bf16 on CPU, fp16 + grad scaling on CUDA")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. schedule.max_iters=1000 data.batch_size=4")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard event files")
    p.add_argument("--stop-signals", nargs="*", default=list(DEFAULT_STOP_SIGNALS), metavar="SIG",
                   help="signals that stop the run after the current step with a checkpoint "
                        f"(default: {' '.join(s[3:] for s in DEFAULT_STOP_SIGNALS)}; none: their usual action)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; every expected failure is one ``error:`` line on stderr and one of the documented exit codes
    (handled here rather than by the dispatcher, whose ValueError -> 2 would fold 3 and 4 into 2)."""
    try:
        parse_signals(args.stop_signals)
        cfg = load_config(args.config, args.cfg_options)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:  # --stop-signals
        print(f"error: --stop-signals: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    try:
        train(cfg, work_dir, amp=args.amp, resume=args.resume, tensorboard=not args.no_tensorboard,
              stop_signals=tuple(args.stop_signals))
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return EXIT_STOPPED
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NON_FINITE
    except WriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_WRITE
    except (PretrainedUnavailableError, WorkDirLockedError, ValueError) as e:  # config/data problems, busy dir
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        distributed.teardown()  # under torchrun: exiting with the gloo group alive can abort the process
    return 0
