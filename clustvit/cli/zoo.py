"""``clustvit zoo list [--json]`` | ``clustvit zoo export NAME DIR``.

``list``: every released checkpoint with its dataset, head, the seed's mIoU, URL and whether it is in
the local cache. ``export``: a zoo checkpoint (downloaded if needed) as a hub-style folder.
"""

from __future__ import annotations

import argparse
import json

from clustvit.loading import load_model
from clustvit.zoo.download import cache_path, is_cached
from clustvit.zoo.hub import save_pretrained
from clustvit.zoo.table import ZOO


def rows() -> list[dict]:
    return [dict(name=e.name, dataset=e.dataset, head=e.head, miou=e.miou, url=e.url, config=e.config,
                 official_config_url=e.official_config_url, class_map=e.class_map, cached=is_cached(e),
                 cache_path=str(cache_path(e))) for e in ZOO.values()]


def format_list(items: list[dict]) -> str:
    width = max(len(r["name"]) for r in items)
    lines = [f"{'name':<{width}}  {'dataset':<10}  {'head':<9}  {'mIoU':>5}  cached  url"]
    for r in items:
        lines.append(f"{r['name']:<{width}}  {r['dataset']:<10}  {r['head']:<9}  {r['miou']:5.2f}  "
                     f"{'yes' if r['cached'] else 'no':<6}  {r['url']}")
    return "\n".join(lines)


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND")
    ls = sub.add_parser("list", help="the released checkpoints", description="the released checkpoints")
    ls.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    ls.set_defaults(func=list_entries)
    ex = sub.add_parser("export", help="a zoo checkpoint as a hub-style folder",
                        description="a zoo checkpoint (downloaded if needed) as a hub-style folder")
    ex.add_argument("name", choices=sorted(ZOO), metavar="NAME")
    ex.add_argument("directory")
    ex.set_defaults(func=export)


def list_entries(args: argparse.Namespace) -> int:
    print(json.dumps(rows(), indent=1) if args.json else format_list(rows()))
    return 0


def export(args: argparse.Namespace) -> int:
    model, cfg = load_model(args.name, map_classes=True)
    entry = ZOO[args.name]
    card = (f"Released checkpoint `{entry.name}` ({entry.url}); the seed reports {entry.miou:.2f} mIoU on "
            f"{entry.dataset}.")
    out = save_pretrained(model, args.directory, cfg, source=entry.name, card=card)
    print(f"wrote {out}")
    return 0
