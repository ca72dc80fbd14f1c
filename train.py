"""``python train.py CONFIG ...`` (the seed's command; also under torchrun) = ``clustvit train CONFIG ...``."""

from clustvit.cli import seed_shim

if __name__ == "__main__":
    seed_shim("train")
