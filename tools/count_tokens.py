"""Same as `clustvit bench tokens` (tokens per block): `python tools/count_tokens.py --help` lists the flags."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from clustvit.cli import seed_shim  # noqa: E402

seed_shim("bench", "tokens")
