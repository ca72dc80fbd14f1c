"""The model zoo: the released checkpoints by name, fetched once into torch.hub's cache.

``python -m dynseg.zoo list`` shows them; ``dynseg.load(NAME)``, ``test.py NAME`` and the tools accept
a name wherever they take a config and a checkpoint (resolution: ``dynseg.loading``).
"""

from .download import ZooError, cache_path, fetch, is_cached
from .hub import read_pretrained, save_pretrained
from .table import ZOO, ZooEntry

__all__ = ["ZOO", "ZooEntry", "ZooError", "cache_path", "fetch", "is_cached", "read_pretrained", "save_pretrained"]
