"""``python tools/train_policynet.py CONFIG ...`` = ``clustvit policy train CONFIG ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from clustvit.cli import seed_shim  # noqa: E402

if __name__ == "__main__":
    seed_shim("policy", "train")
