"""The model zoo: the released checkpoints by name, fetched once into torch.hub's cache.

``clustvit zoo list`` shows them; ``clustvit.load(NAME)``, ``clustvit test NAME`` and the tools accept
a name wherever they take a config and a checkpoint (resolution: ``clustvit.loading``).
"""

from clustvit.zoo.download import ZooError, cache_path, fetch, is_cached
from clustvit.zoo.hub import read_pretrained, save_pretrained
from clustvit.zoo.table import ZOO, ZooEntry

__all__ = ["ZOO", "ZooEntry", "ZooError", "cache_path", "fetch", "is_cached", "read_pretrained", "save_pretrained"]
