"""``python tools/clust_analysis.py CONFIG CHECKPOINT ...`` (the seed's command) = ``clustvit analyse clusters ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from clustvit.cli import seed_shim  # noqa: E402

if __name__ == "__main__":
    seed_shim("analyse", "clusters")
