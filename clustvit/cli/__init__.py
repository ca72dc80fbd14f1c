"""The ``clustvit`` command: ``clustvit COMMAND [SUBCOMMAND] [ARGS]`` (``clustvit --help`` lists them).

Each command lives in its own module here, which defines ``configure(parser)``: it adds the command's
arguments (or its subcommands) and sets ``parser.set_defaults(func=...)``, a function of the parsed
arguments returning the exit status. Only the command that runs is imported, so ``clustvit --help``
answers without loading torch. Expected failures (a bad config, data file or checkpoint: ValueError,
FileNotFoundError) end in one line, ``error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# command -> (module, one-line help). The top-level help lists them in this order.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("clustvit.cli.demo", "train + evaluate the demo ClustViT and ViT on built-in synthetic data"),
    "train": ("clustvit.cli.train", "train a segmentor from a config (torchrun for several processes)"),
    "test": ("clustvit.cli.test", "evaluate a checkpoint or zoo model on a dataset split"),
    "predict": ("clustvit.cli.predict", "label images and folders (a model, or an exported .onnx graph)"),
    "export": ("clustvit.cli.export", "export a model to ONNX (data-dependent merge included)"),
    "zoo": ("clustvit.cli.zoo", "the released checkpoints: list, export as a hub folder"),
    "configs": ("clustvit.cli.configs", "list the packaged configs"),
    "bench": ("clustvit.cli.bench", "efficiency: fps, flops, tokens, A/B comparison, official, backends, kernels"),
    "analyse": ("clustvit.cli.analyse", "analysis panels: cluster assignments, intermediate features"),
    "data": ("clustvit.cli.data", "dataset preparation (SUIM masks, RumexWeeds)"),
    "weights": ("clustvit.cli.weights", "checkpoint utilities: split into backbone/head files and merge back"),
    "policy": ("clustvit.cli.policy", "train the CTS baseline's policy network"),
}


def _top_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="clustvit", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="clustvit [-h] [--version] COMMAND [ARGS]",
        description="ClustViT: clustering-based token merging for ViT semantic segmentation.",
        epilog=f"commands:\n{listing}\n\n`clustvit COMMAND --help` describes each command.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("command", nargs="?", metavar="COMMAND", help=argparse.SUPPRESS)
    return p


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of one command (``prog`` = ``clustvit NAME``)."""
    module, help_ = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"clustvit {name}", description=help_)
    importlib.import_module(module).configure(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``clustvit ARGV``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        top = _top_parser()
        args = top.parse_args(argv[:1] if argv and argv[0].startswith("-") else [])
        if args.version:
            from clustvit import __version__

            print(f"clustvit {__version__}")
            return 0
        if argv:
            top.error(f"unknown command {argv[0]!r}; expected one of: {', '.join(COMMANDS)}")
        top.print_help()
        return 0
    args = command_parser(argv[0]).parse_args(argv[1:])
    if not hasattr(args, "func"):  # a command group called without its subcommand
        command_parser(argv[0]).print_help()
        return 2
    try:
        status = args.func(args)
    except (ValueError, FileNotFoundError) as e:  # ConfigError, DatasetError, CheckpointError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `clustvit configs | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter flushes stdout at exit
        return 0
    return int(status or 0)


def seed_shim(*command: str) -> None:
    """Run ``clustvit COMMAND... ARGV`` and exit: the body of the seed's scripts (``tools/get_fps.py``)."""
    sys.exit(main([*command, *sys.argv[1:]]))

