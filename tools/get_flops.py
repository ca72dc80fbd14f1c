"""Same as `clustvit bench flops` (GFLOPs per image): `python tools/get_flops.py --help` lists the flags."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from clustvit.cli import seed_shim  # noqa: E402

seed_shim("bench", "flops")
