"""``clustvit configs [PATTERN]``: the packaged configs, by the name every command takes."""

from __future__ import annotations

import argparse
import fnmatch

from clustvit.configs import PACKAGED, list_configs


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter on the name, e.g. '*suim*'")
    p.add_argument("--paths", action="store_true", help="print each file's path instead of its name")
    p.set_defaults(func=list_names)


def list_names(args: argparse.Namespace) -> int:
    found = [p for p in list_configs() if fnmatch.fnmatch(p.stem, args.pattern)]
    for path in found:
        print(path if args.paths else f"{path.stem:<72} config/{path.relative_to(PACKAGED)}")
    return 0 if found else 1
