"""Hub-style model folders: ``config.json`` + ``model.safetensors`` + ``README.md`` (a short model card).

``config.json`` is the resolved config (JSON: tuples become lists) with one extra top-level key,
``"clustvit"``: ``{"format": "clustvit-hub-v1", "class_map": <name or null>, "source": <where it came from>}``.
``model.safetensors`` holds the segmentor's state dict in our names. ``clustvit.load(DIR)`` reads it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from clustvit.atomic import atomic_path, write_json_atomic, write_text_atomic
from clustvit.zoo.classmap import CLASS_MAPS, ClassMapped

FORMAT = "clustvit-hub-v1"
LEGACY = ("dynseg", "dynseg-hub-v1")  # key and format written before the package was named clustvit
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"


def is_hub_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG).is_file()


def _unwrap(model: Any) -> tuple[nn.Module, str | None]:
    """(the segmentor itself, its class map's name) of a Segmentor, ClassMapped or Predictor."""

    model = getattr(model, "model", model) if not isinstance(model, nn.Module) else model  # a Predictor
    if isinstance(model, ClassMapped):
        name = next(k for k, v in CLASS_MAPS.items() if v == model.class_map)
        return model.model, name
    return model, None


def save_pretrained(model: Any, directory: str | os.PathLike, config: dict | None = None,
                    source: str = "", card: str = "") -> Path:
    """Write ``directory/{config.json, model.safetensors, README.md}``; returns the folder.

    Args:
        model: a segmentor (or ``clustvit.load``'s Predictor); models built by ``clustvit.loading`` carry
            their resolved config, others need ``config``.
        config: the resolved config (default: the one the loader recorded on the model).
        source: where the weights came from (a zoo name, a checkpoint path), for the card.
        card: extra Markdown for the model card.
    """
    from safetensors.torch import save_file

    seg, class_map = _unwrap(model)
    config = config if config is not None else getattr(seg, "clustvit_config", None)
    if config is None:
        raise ValueError("save_pretrained: the model carries no config (it was not built by clustvit.loading): "
                         "pass config=")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in seg.state_dict().items()}
    with atomic_path(out / WEIGHTS, suffix=".safetensors") as tmp:
        save_file(tensors, tmp, metadata={"format": FORMAT})
    meta = {"format": FORMAT, "class_map": class_map, "source": source}
    write_json_atomic(out / CONFIG, {**json.loads(json.dumps(config)), "clustvit": meta}, indent=1)
    bb = config["model"]["backbone"]
    lines = [
        f"# {source or out.name}", "",
        f"{bb['type']} ({bb.get('embed_dim')} wide, {bb.get('depth')} blocks"
        + (f", k={bb['num_clusters']}, ip={bb['injection_point']}" if "num_clusters" in bb else "")
        + f") with the {config['model']['decode_head']['type']} head, {config['model']['num_classes']} outputs"
        + (f", mapped onto our classes by `{class_map}`" if class_map else "") + ".",
        f"Dataset: {config.get('data', {}).get('type', 'unknown')}. "
        f"{sum(t.numel() for t in tensors.values()) / 1e6:.2f} M values in `{WEIGHTS}`.", "",
        "```python", "import clustvit", f'model = clustvit.load("{out.name}")  # this folder', "```",
    ]
    if card:
        lines += ["", card]
    write_text_atomic(out / CARD, "\n".join(lines) + "\n")
    return out


def read_pretrained(directory: str | os.PathLike) -> tuple[dict, Path, str | None]:
    """(resolved config, weights file, class map name) of a hub folder."""
    folder = Path(directory)
    try:
        cfg = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder / CONFIG}: not a readable hub config ({e})") from None
    meta = cfg.pop("clustvit", cfg.pop(LEGACY[0], None))
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, LEGACY[1]) or "model" not in cfg:
        raise ValueError(f"{folder / CONFIG}: expected a {FORMAT} config (a 'clustvit' key with its format and "
                         "a 'model' section)")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{weights}: weights file missing from the hub folder")
    return cfg, weights, meta.get("class_map")
