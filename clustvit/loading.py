"""The one model loader: a model source plus a checkpoint -> a segmentor in eval mode.

``clustvit.load``, ``test.py`` and every tool build their model here, so every source loads the same way
everywhere (converted, strict key checks). A source is, in this order:
  * a config dict;
  * a hub-style folder (``config.json`` + ``model.safetensors``, see ``clustvit.zoo.hub``);
  * a zoo name (``clustvit zoo list``): our config for it, the released checkpoint fetched once
    into torch.hub's cache, and its class map (the official SUIM heads' 9 outputs onto our 8 classes);
  * a config file path.
An explicit checkpoint replaces the folder's or zoo entry's weights.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clustvit.configs import load_config, parse_overrides
from clustvit.convert.weights import load_checkpoint
from clustvit.models.build import build_segmentor
from clustvit.models.segmentor import Segmentor
from clustvit.zoo.classmap import CLASS_MAPS, ClassMapped
from clustvit.zoo.download import fetch
from clustvit.zoo.hub import is_hub_folder, read_pretrained
from clustvit.zoo.table import ZOO

NO_CHECKPOINT = ("", "none", "None")  # the CLI spelling of "random weights"


def no_checkpoint(checkpoint: str | os.PathLike | None) -> bool:
    """True for ``None`` and the CLI spellings of "random weights" (``none``, empty)."""
    return checkpoint is None or str(checkpoint) in NO_CHECKPOINT


def resolve_config(config: str | os.PathLike | dict, cfg_options: Sequence[str] | None = None) -> dict[str, Any]:
    """A config path (with optional ``--cfg-options``) or an already resolved config dict."""
    if isinstance(config, dict):
        if cfg_options:
            raise ValueError("cfg_options only apply to a config file path")
        return config

    return load_config(Path(config), list(cfg_options or []))


@dataclass
class Resolved:
    """What a model source stands for: resolved config, checkpoint (None: random), class map name."""

    cfg: dict[str, Any]
    checkpoint: str | os.PathLike | None
    class_map: str | None
    label: str  # how to name it in reports: the zoo name, folder or config path


def is_named_source(source: str | os.PathLike | dict) -> bool:
    """A hub folder or a zoo name: a source that brings its own weights."""

    return not isinstance(source, dict) and (is_hub_folder(source) or (str(source) in ZOO and not Path(source).exists()))


def resolve(
    source: str | os.PathLike | dict,
    checkpoint: str | os.PathLike | None = None,
    cfg_options: Sequence[str] | None = None,
    progress: bool = True,
) -> Resolved:
    """Config, checkpoint and class map of a model source (see the module docstring); may download."""

    if isinstance(source, dict):
        return Resolved(resolve_config(source, cfg_options), checkpoint, None, "<config dict>")
    if is_hub_folder(source):
        cfg, weights, class_map = read_pretrained(source)
        if cfg_options:
            cfg = _merged(cfg, parse_overrides(list(cfg_options)))
        return Resolved(cfg, weights if checkpoint is None else checkpoint, class_map, str(source))
    if str(source) in ZOO and not Path(source).exists():
        entry = ZOO[str(source)]
        cfg = resolve_config(entry.config, [*entry.cfg_options, *(cfg_options or [])])
        weights = fetch(entry, progress) if checkpoint is None else checkpoint
        return Resolved(cfg, weights, entry.class_map, entry.name)
    return Resolved(resolve_config(source, cfg_options), checkpoint, None, str(source))


def _merged(cfg: dict, overrides: dict) -> dict:
    """``cfg`` with ``overrides`` merged in (dicts recurse), as ``--cfg-options`` merge into a config file."""
    out = dict(cfg)
    for key, value in overrides.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def require_checkpoint(source: str | os.PathLike | dict, checkpoint: str | os.PathLike | None) -> None:
    """CLIs: a config file needs a CHECKPOINT argument (``none`` for random weights); a zoo name or hub
    folder brings its own."""
    if checkpoint is None and not is_named_source(source):
        raise ValueError(f"{source}: give a CHECKPOINT after a config file ('none' for random weights), "
                         "or a zoo name / hub folder instead of the config")


def build_model(
    cfg: dict, checkpoint: str | os.PathLike | None, device: str | torch.device = "cpu", seed: int = 0
) -> Segmentor:
    """Build the config's segmentor and load ``checkpoint`` (any supported format) strictly.

    ``checkpoint`` ``None`` / ``"none"``: random weights, seeded with ``seed`` so they are the same from
    run to run (a note goes to stderr). The config's ImageNet ``pretrained`` URL is never fetched here
    (it only initialises training), nor, with a checkpoint, CTS's ``policy_weights`` file.
    """

    torch.manual_seed(seed)
    model_cfg = {**cfg["model"], "pretrained": None}
    if not no_checkpoint(checkpoint) and model_cfg["backbone"].get("policy_weights"):
        # A whole-segmentor checkpoint holds CTS's policy net too: its separate file is not needed.
        model_cfg["backbone"] = {**model_cfg["backbone"], "policy_weights": None}
    model = build_segmentor(model_cfg)
    if no_checkpoint(checkpoint):
        print("clustvit: no checkpoint given: the model has random weights", file=sys.stderr)
    else:
        load_checkpoint(model, checkpoint)
    model.clustvit_config = cfg  # what save_pretrained writes as config.json
    return model.to(device).eval()


def load_model(
    config: str | os.PathLike | dict,
    checkpoint: str | os.PathLike | None = None,
    cfg_options: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    map_classes: bool = False,
) -> tuple[Segmentor, dict[str, Any]]:
    """(segmentor in eval mode, resolved config) of a model source and an optional checkpoint.

    Args:
        map_classes: wrap a model whose outputs are not our classes (an official SUIM head) so that it
            predicts ours (``clustvit.zoo.classmap.ClassMapped``). Off for the efficiency tools, which
            measure the checkpoint's own model.
    """
    r = resolve(config, checkpoint, cfg_options)
    model = build_model(r.cfg, r.checkpoint, device, seed)
    if map_classes and r.class_map:
        model = ClassMapped(model, CLASS_MAPS[r.class_map])
    return model, r.cfg
