"""Translate official (mmseg-style) model config dicts into our constructor arguments.

Used to build a model that matches an official checkpoint or fixture from its own config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clustvit.errors import ConfigError
from clustvit.models.build import build_segmentor


def backbone_cfg(c: Mapping[str, Any]) -> dict[str, Any]:
    """Official ``VisionTransformer``/``ClustViT`` arguments -> our backbone config."""
    if c.get("type") not in ("VisionTransformer", "ClustViT"):
        raise ConfigError(f"backbone.type: {c.get('type')!r} has no official translation")
    if not c.get("with_cls_token", True) or c.get("patch_size", 16) != 16:
        raise ConfigError("backbone: only the official setting with_cls_token=True, patch_size=16 is supported")
    out = dict(
        type=c["type"],
        img_size=c.get("img_size", 224),
        patch_size=16,
        embed_dim=c.get("embed_dims", 768),
        depth=c.get("num_layers", 12),
        num_heads=c.get("num_heads", 12),
        mlp_ratio=c.get("mlp_ratio", 4),
        out_indices=c.get("out_indices", -1),
        final_norm=c.get("final_norm", False),
        drop_path_rate=c.get("drop_path_rate", 0.0),
    )
    if c["type"] == "ClustViT":
        points = list(c.get("injection_points", [3]))
        if len(points) != 1:
            raise ConfigError(f"backbone.injection_points: exactly one injection point is supported, got {points}")
        out.update(num_clusters=c["num_clusters"], injection_point=points[0], cluster_mlp_size=c["cluster_mlp_size"])
    return out


def head_cfg(c: Mapping[str, Any]) -> dict[str, Any]:
    """Official decode-head arguments -> our head config (without in_channels / num_classes)."""
    if c["type"] == "SegmenterMaskTransformerHead":
        return dict(
            type=c["type"],
            embed_dim=c.get("embed_dims", 768),
            depth=c.get("num_layers", 2),
            num_heads=c.get("num_heads", 12),
            mlp_ratio=c.get("mlp_ratio", 4),
            drop_path_rate=c.get("drop_path_rate", 0.1),
            dropout=c.get("dropout_ratio", 0.0),
        )
    if c["type"] == "UPerHead":
        if c.get("align_corners", False):
            raise ConfigError("decode_head.align_corners=True is not supported")
        return dict(
            type="UPerHead",
            channels=c["channels"],
            pool_scales=tuple(c.get("pool_scales", (1, 2, 3, 6))),
            dropout=c.get("dropout_ratio", 0.1),
        )
    raise ConfigError(f"decode_head.type: {c['type']!r} has no official translation")


def segmentor_from_official(cfg: Mapping[str, Any]):
    """Official ``DynSegEncoderDecoder`` config -> our Segmentor."""
    test = dict(cfg.get("test_cfg") or {"mode": "whole"})
    clust = [d for d in (cfg.get("auxiliary_head") or {}).get("loss_decode", []) if d.get("type") == "ClustLoss"]
    return build_segmentor(
        dict(
            backbone=backbone_cfg(cfg["backbone"]),
            decode_head=head_cfg(cfg["decode_head"]),
            num_classes=cfg["decode_head"]["num_classes"],
            clust_loss_weight=clust[0].get("loss_weight", 0.1) if clust else 0.1,
            test_cfg={k: v for k, v in test.items() if k in ("mode", "crop_size", "stride")},
        )
    )
