"""Plain builders: config dict -> modules. The two dicts below are the only name -> class mapping."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from clustvit.errors import ConfigError  # a model key that cannot be built is a config problem
from clustvit.models.clustvit import ClustViT
from clustvit.models.cts import CTSViT
from clustvit.models.heads.segmenter import MaskTransformerHead
from clustvit.models.heads.upernet import UPerHead
from clustvit.models.segmentor import Segmentor
from clustvit.models.vit import VisionTransformer

BACKBONES: dict[str, type[nn.Module]] = {
    "VisionTransformer": VisionTransformer,
    "ClustViT": ClustViT,
    "CTSViT": CTSViT,
}
HEADS: dict[str, type[nn.Module]] = {
    "SegmenterMaskTransformerHead": MaskTransformerHead,
    "UPerHead": UPerHead,
}
SEGMENTOR_KEYS = ("backbone", "decode_head", "num_classes", "clust_loss_weight", "ignore_index", "pretrained", "test_cfg")
TEST_CFG_KEYS = ("mode", "crop_size", "stride")


def _cls(table: Mapping[str, type], cfg: Mapping[str, Any], where: str) -> type:
    kind = cfg.get("type")
    if kind not in table:
        raise ConfigError(f"{where}.type: unknown type {kind!r}; expected one of {sorted(table)}")
    return table[kind]


def constructor_params(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``cls(...)`` takes, those a ``**kwargs`` passes on to the base class included
    (``ClustViT(num_clusters, ..., **vit_kwargs)`` takes every ``VisionTransformer`` argument too)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        own = inspect.signature(klass.__init__).parameters
        params.update({k: p for k, p in own.items() if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                       and k not in params})
        if not any(p.kind is p.VAR_KEYWORD for p in own.values()):
            break  # this constructor passes nothing further up
    return params


def check_kwargs(cls: type, kwargs: Mapping[str, Any], where: str, provided: tuple[str, ...] = ()) -> None:
    """Raise ConfigError naming any key the constructor does not take."""
    params = constructor_params(cls)
    accepted = [p for p in params if p not in provided]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"{where}.{key}: unknown key for {cls.__name__}; accepted keys: {', '.join(accepted)}")


def build_backbone(cfg: Mapping[str, Any], where: str = "model.backbone") -> nn.Module:
    cls = _cls(BACKBONES, cfg, where)
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    check_kwargs(cls, kwargs, where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def build_head(cfg: Mapping[str, Any], backbone: nn.Module, num_classes: int, where: str = "model.decode_head") -> nn.Module:
    cls = _cls(HEADS, cfg, where)
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    check_kwargs(cls, kwargs, where, provided=("in_channels", "num_classes"))
    dim = backbone.embed_dim
    in_channels = dim if cls is MaskTransformerHead else [dim] * len(backbone.out_indices)
    return cls(in_channels=in_channels, num_classes=num_classes, **kwargs)


def build_segmentor(cfg: Mapping[str, Any]) -> Segmentor:
    """Build the whole segmentor from a config's ``model`` dict (see docs/ARCHITECTURE.md)."""
    for key in cfg:
        if key not in SEGMENTOR_KEYS:
            raise ConfigError(f"model.{key}: unknown key; accepted keys: {', '.join(SEGMENTOR_KEYS)}")
    for key in ("backbone", "decode_head", "num_classes"):
        if key not in cfg:
            raise ConfigError(f"model.{key}: missing")
    test_cfg = dict(cfg.get("test_cfg") or {})
    for key in test_cfg:
        if key not in TEST_CFG_KEYS:
            raise ConfigError(f"model.test_cfg.{key}: unknown key; accepted keys: {', '.join(TEST_CFG_KEYS)}")
    backbone = build_backbone(cfg["backbone"])
    head = build_head(cfg["decode_head"], backbone, cfg["num_classes"])
    return Segmentor(
        backbone,
        head,
        num_classes=cfg["num_classes"],
        clust_loss_weight=cfg.get("clust_loss_weight", 0.1),
        ignore_index=cfg.get("ignore_index", 255),
        test_mode=test_cfg.get("mode", "whole"),
        crop_size=test_cfg.get("crop_size", (512, 512)),
        stride=test_cfg.get("stride", (480, 480)),
    )
