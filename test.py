"""``python test.py CONFIG CHECKPOINT ...`` (the seed's command) = ``clustvit test CONFIG CHECKPOINT ...``."""

from clustvit.cli import seed_shim

seed_shim("test")
