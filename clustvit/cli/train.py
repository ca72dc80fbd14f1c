"""``clustvit train CONFIG [--work-dir DIR] [--amp] [--resume] [--cfg-options k=v ...]``: train a segmentor.

Your own labelled folder, without writing a config (docs/OWN_DATA.md):
``clustvit train --data DIR --model MODEL [--from CHECKPOINT] --work-dir W``. MODEL is a short form
(clustvit-b_k3_ip3, clustvit-t_k2_ip4, vit-s, cts-b ...: the SUIM Segmenter config of that size, k and ip),
a packaged config or a zoo name; the resolved config is saved as W/config.py, which ``clustvit test`` and
``clustvit train W/config.py --resume --work-dir W`` take. ``--from`` starts from any whole-segmentor
checkpoint (file, zoo name, hub folder) whose class count may differ: the class-specific head keys are
re-initialised and named in one line, everything else loads strictly.

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
from clustvit.cli.data import add_folder_args, folder_kwargs
from clustvit.configs import ConfigError, load_config
from clustvit.configs.own_data import SHORT_FORMS, own_data_config
from clustvit.engine import distributed
from clustvit.engine.lock import WorkDirLockedError
from clustvit.engine.stop import DEFAULT_STOP_SIGNALS, parse_signals
from clustvit.engine.trainer import NonFiniteLossError, PretrainedUnavailableError, TrainingStopped, train

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_WRITE = 4
EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL: "try again later", which a requeued job does with --resume


def say(line: str) -> None:
    """One stderr line in one write: under torchrun every rank shares the log, and ``print`` writes the text
    and its newline in two system calls (stderr is unbuffered there), so two ranks' lines could run together."""
    sys.stderr.write(line + "\n")


def configure(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("config", nargs="?",
                   help="config file or name, e.g. segmenter_clustvit-demo_synthetic (clustvit configs); "
                        "not needed with --data")
    p.add_argument("--data", metavar="DIR", help="train on this labelled folder (any layout `clustvit data check` "
                   "reads), with --model instead of a CONFIG")
    p.add_argument("--model", metavar="MODEL", help=f"with --data: a short form ({SHORT_FORMS}), a packaged "
                   "config or a zoo name")
    p.add_argument("--from", dest="from_", metavar="CHECKPOINT", help="start from this whole-segmentor checkpoint "
                   "(file, zoo name or hub folder; another class count re-initialises the class-specific head "
                   "keys); sets runtime.load_from, --resume wins over it")
    p.add_argument("--work-dir", help="run folder (default: work_dirs/<config name>)")
    p.add_argument("--amp", action="store_true", help="mixed precision in clustvit.accel.amp_dtype: bfloat16 (float16 only on GPUs without bfloat16); float16 trains with loss scaling")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. schedule.max_iters=1000 data.batch_size=4")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard event files")
    p.add_argument("--stop-signals", nargs="*", default=list(DEFAULT_STOP_SIGNALS), metavar="SIG",
                   help="signals that stop the run after the current step with a checkpoint "
                        f"(default: {' '.join(s[3:] for s in DEFAULT_STOP_SIGNALS)}; none: their usual action)")
    add_folder_args(p)
    p.set_defaults(func=run)


def _source_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the CONFIG / --data / --model combination, or None."""
    if args.data is not None and args.config is not None:
        return f"give either CONFIG ({args.config}) or --data DIR --model MODEL, not both"
    if args.data is not None and args.model is None:
        return f"--data {args.data}: expected --model MODEL too ({SHORT_FORMS}, a packaged config or a zoo name)"
    if args.data is None and args.model is not None:
        return "--model: expected --data DIR too (with a CONFIG, the config names the model)"
    if args.data is None and args.config is None:
        return "expected a CONFIG, or --data DIR --model MODEL"
    return None


def _from_option(source: str) -> str:
    """``runtime.load_from`` of --from: an existing path made absolute (the saved config works anywhere)."""
    value = str(Path(source).resolve()) if Path(source).exists() else source
    return f"runtime.load_from={value!r}"


def _default_work_dir(args: argparse.Namespace) -> str:
    if args.data is not None:
        return str(Path("work_dirs") / f"{Path(args.data).resolve().name}_{Path(args.model).stem}")
    return str(Path("work_dirs") / Path(args.config).stem)


def run(args: argparse.Namespace) -> int:
    """Train; every expected failure is one ``error:`` line on stderr and one of the documented exit codes
    (handled here rather than by the dispatcher, whose ValueError -> 2 would fold 3 and 4 into 2)."""
    problem = _source_problem(args)
    if problem is not None:
        say(f"error: {problem}")
        return EXIT_BAD_INPUT
    try:
        parse_signals(args.stop_signals)
    except ValueError as e:
        say(f"error: --stop-signals: {e}")
        return EXIT_BAD_INPUT
    options = [*args.cfg_options, *([_from_option(args.from_)] if args.from_ else [])]  # --from wins
    try:
        if args.data is not None:
            cfg = own_data_config(args.model, args.data, folder_kwargs(args), options)
        else:
            cfg = load_config(args.config, options)
    except ConfigError as e:
        say(f"config error: {e}")
        return EXIT_BAD_INPUT
    except ValueError as e:  # the folder: DatasetError, one line naming the file
        say(f"error: {e}")
        return EXIT_BAD_INPUT
    work_dir = args.work_dir or _default_work_dir(args)
    try:
        train(cfg, work_dir, amp=args.amp, resume=args.resume, tensorboard=not args.no_tensorboard,
              stop_signals=tuple(args.stop_signals))
    except TrainingStopped as e:
        say(f"stopped: {e}")
        return EXIT_STOPPED
    except NonFiniteLossError as e:
        say(f"error: {e}")
        return EXIT_NON_FINITE
    except WriteError as e:
        say(f"error: {e}")
        return EXIT_WRITE
    except (PretrainedUnavailableError, WorkDirLockedError, ValueError) as e:  # config/data problems, busy dir
        say(f"error: {e}")
        return EXIT_BAD_INPUT
    finally:
        distributed.teardown()  # under torchrun: exiting with the gloo group alive can abort the process
    return 0
