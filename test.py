"""``python test.py CONFIG CHECKPOINT ...`` (the seed's command) = ``clustvit test CONFIG CHECKPOINT ...``."""

from clustvit.cli import main as clustvit
from clustvit.cli import seed_shim


def main(argv: list[str]) -> int:
    """``clustvit test ARGV`` for code that imports this script (it was a module with ``main``)."""
    return clustvit(["test", *argv])


if __name__ == "__main__":
    seed_shim("test")
