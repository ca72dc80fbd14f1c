"""``python tools/split_weights.py CHECKPOINT [--out-dir DIR]`` = ``clustvit weights split CHECKPOINT ...``;
``python tools/split_weights.py DIR --merge [--out FILE]`` = ``clustvit weights merge DIR ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from clustvit.cli import main as clustvit  # noqa: E402


def main(argv: list[str]) -> int:
    """The ``clustvit weights`` command for this script's ARGV (``--merge`` picks the subcommand)."""
    if "--merge" in argv:
        return clustvit(["weights", "merge", *(a for a in argv if a != "--merge")])
    return clustvit(["weights", "split", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
