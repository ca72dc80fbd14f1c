"""``python tools/split_weights.py CHECKPOINT [--out-dir DIR]`` = ``clustvit weights split CHECKPOINT ...``;
``python tools/split_weights.py DIR --merge [--out FILE]`` = ``clustvit weights merge DIR ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from clustvit.cli import seed_shim  # noqa: E402

if "--merge" in sys.argv:
    sys.argv.remove("--merge")
    seed_shim("weights", "merge")
seed_shim("weights", "split")
