"""Same as `clustvit bench fps` (inference img/s): `python tools/get_fps.py --help` lists the flags."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from clustvit.cli import seed_shim  # noqa: E402

seed_shim("bench", "fps")
