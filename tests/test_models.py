"""Model behaviour beyond the fixtures: every size, gradients, batch invariance, merging, weights."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from clustvit.convert.weights import (
    CheckpointError,
    convert_state_dict,
    load_checkpoint,
    load_pretrained_backbone,
    read_checkpoint,
    to_official,
)
from clustvit.models import clustvit as cv
from clustvit.models import vit as v
from clustvit.models.build import ConfigError, build_segmentor
from clustvit.models.losses import pseudo_labels
from clustvit.models.merging import merge, plan_merge, regenerate, unmerge
from clustvit.models.oracle import seg_cluster_ids
from clustvit.models.segmentor import sliding_windows


def tiny_cfg(backbone: str = "ClustViT", head: str = "SegmenterMaskTransformerHead", **bb) -> dict:
    backbone_cfg = dict(type=backbone, embed_dim=32, depth=3, num_heads=2, **{"img_size": 64, **bb})
    if backbone == "ClustViT":
        backbone_cfg.update(num_clusters=3, injection_point=1, cluster_mlp_size=16)
    head_cfg = (
        dict(type=head, embed_dim=32, depth=1, num_heads=2)
        if head == "SegmenterMaskTransformerHead"
        else dict(type=head, channels=8)
    )
    return dict(backbone=backbone_cfg, decode_head=head_cfg, num_classes=4)


# ---------------------------------------------------------------- every size builds and trains
@pytest.mark.parametrize(
    "kind,size",
    # ClustViT-l runs every ViT-l code path too; ViT-l alone would add ~15 s for no new coverage.
    [(k, s) for k in ("vit", "clustvit") for s in ("tiny", "small", "base")] + [("clustvit", "large")],
)
def test_every_size_forward_backward(kind: str, size: str):
    torch.manual_seed(0)
    dims = v.VIT_SIZES[size]
    builder = getattr(v if kind == "vit" else cv, f"{kind}_{size}")
    extra = dict(injection_point=1, num_clusters=2, cluster_mlp_size=32) if kind == "clustvit" else {}
    model = builder(img_size=48, **extra).train()
    assert (model.embed_dim, model.depth) == (dims["embed_dim"], dims["depth"])
    x = torch.randn(2, 3, 48, 48)
    ids = torch.tensor([[0, 1, 1, 2, 0, 2, 0, 0, 1], [2] * 9]) if kind == "clustvit" else None
    out = model(x, cluster_ids=ids) if ids is not None else model(x)
    feat = out.features[-1]
    assert feat.shape == (2, dims["embed_dim"], 3, 3)
    feat.square().mean().backward()
    assert torch.isfinite(feat).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for n, p in model.named_parameters() if not n.startswith("cluster."))


def test_gradients_reach_every_parameter():
    """Through the segmentor loss (seg CE + cluster CE) every parameter of a merging ClustViT gets a gradient."""
    torch.manual_seed(0)
    seg = build_segmentor(tiny_cfg(drop_path_rate=0.1)).train()
    images = torch.randint(0, 256, (2, 3, 64, 64)).float()
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    masks[:, :32] = 1
    masks[:, 48:, 48:] = 2
    seg.backbone.cluster.fc2.weight.data *= 300  # spread the arg-max over all ids, so that images merge
    losses = seg.loss(images, masks)
    assert seg(images).backbone.merged.all()
    assert set(losses) == {"loss", "loss_seg", "loss_clust"}
    losses["loss"].backward()
    no_grad = [n for n, p in seg.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


# ---------------------------------------------------------------- merging: pure functions
def test_merge_plan_layout_and_round_trip():
    ids = torch.tensor([[0, 2, 2, 0, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 3]])
    plan = plan_merge(ids, num_clusters=3)
    # Image 0: cls + 3 kept + 3 clusters; image 1: one id -> unreduced; image 2: cls + 5 kept + 3 clusters.
    assert plan.lengths.tolist() == [7, 7, 9] and plan.cu_seqlens.tolist() == [0, 7, 14, 23]
    assert plan.reduced.tolist() == [True, False, True]
    x = torch.arange(3 * 7, dtype=torch.float32).view(3, 7, 1).expand(3, 7, 2).contiguous()
    y = merge(x, plan)  # (1, 23, 2)
    img0 = y[0, :7, 0].tolist()
    assert img0 == [0, 1, 4, 6, 5, (2 + 3) / 2, 0]  # cls, kept 1,4,6 -> tokens 1,4,6; c1=mean(5); c2=mean(2,3); c3 empty
    assert y[0, 7:14, 0].tolist() == list(range(7, 14))  # unreduced image copied whole
    assert y[0, 14:, 0].tolist() == [14, 15, 16, 17, 18, 19, 0, 0, 20]
    # Regenerating with an identity-on-the-cluster-token regenerator restores constant-per-cluster inputs exactly.
    back = unmerge(y, plan).view(3, 7, 2)
    assert back[0, :, 0].tolist() == [0, 1, 2.5, 2.5, 4, 5, 6]
    take_cluster = lambda z: z[:, 2:]  # noqa: E731 - concat[x_inj, cluster] -> cluster
    full = regenerate(y, x, plan, take_cluster)
    assert torch.equal(full, back)


def test_single_image_all_one_id_is_unreduced():
    for k in (0, 2):
        plan = plan_merge(torch.full((1, 16), k), num_clusters=3)
        assert not plan.any_reduced and plan.lengths.tolist() == [17] and plan.total == 17


def test_bad_cluster_ids_raise():
    with pytest.raises(ValueError, match="cluster ids must lie in"):
        plan_merge(torch.tensor([[0, 4]]), num_clusters=3)


# ---------------------------------------------------------------- batch invariance
@pytest.mark.parametrize("seed", range(3))
def test_batch_invariance(seed: int):
    """Every image's output equals its batch-1 output, for random images, batch sizes and assignments."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    seg = build_segmentor(tiny_cfg(head="UPerHead", out_indices=(0, 1, 2))).eval()
    B = int(torch.randint(2, 6, (1,), generator=g))
    images = torch.randint(0, 256, (B, 3, 64, 80), generator=g).float()
    ids = torch.randint(0, 4, (B, 20), generator=g)
    ids[0] = 0  # one image unreduced (all kept)
    ids[1] = 2  # one image all in one cluster (unreduced too)
    with torch.no_grad():
        seg.backbone.cluster.fc2.bias += torch.randn(4, generator=g) * 3  # vary the arg-max mix too
        for oracle_ids in (ids, None):
            batched = seg.backbone(seg.normalise(images), cluster_ids=oracle_ids)
            logits = seg.decode_head(batched.features)
            for b in range(B):
                single_ids = None if oracle_ids is None else oracle_ids[b : b + 1]
                alone = seg.backbone(seg.normalise(images[b : b + 1]), cluster_ids=single_ids)
                assert torch.equal(alone.cluster_ids[0], batched.cluster_ids[b])
                for f_alone, f_batch in zip(alone.features, batched.features):
                    torch.testing.assert_close(f_alone[0], f_batch[b], atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(seg.decode_head(alone.features)[0], logits[b], atol=1e-4, rtol=1e-4)


def test_tokens_per_block_counts_the_short_sequence():
    model = cv.ClustViT(img_size=64, embed_dim=32, depth=4, num_heads=2, injection_point=2, num_clusters=2, cluster_mlp_size=8)
    ids = torch.zeros(2, 16, dtype=torch.long)
    ids[0, :10] = 1
    ids[0, 10:12] = 2
    out = model(torch.randn(2, 3, 64, 64), cluster_ids=ids)
    assert out.tokens_per_block.tolist() == [[17, 17, 1 + 4 + 2, 1 + 4 + 2], [17, 17, 17, 17]]


# ---------------------------------------------------------------- position embedding
def bicubic_reference(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Direct bicubic resize (Keys a=-0.75, half-pixel centres, border clamp), as PyTorch defines it."""

    def weights(t: float) -> list[float]:
        a = -0.75

        def k(d: float) -> float:
            d = abs(d)
            if d <= 1:
                return (a + 2) * d**3 - (a + 3) * d**2 + 1
            if d < 2:
                return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
            return 0.0

        return [k(t + 1), k(t), k(1 - t), k(2 - t)]

    H, W, C = grid.shape
    out = np.zeros((out_h, out_w, C))
    for i in range(out_h):
        sy = (i + 0.5) * H / out_h - 0.5
        y0, ty = int(np.floor(sy)), sy - np.floor(sy)
        for j in range(out_w):
            sx = (j + 0.5) * W / out_w - 0.5
            x0, tx = int(np.floor(sx)), sx - np.floor(sx)
            for m, wy in zip(range(-1, 3), weights(ty)):
                for n, wx in zip(range(-1, 3), weights(tx)):
                    yy, xx = min(max(y0 + m, 0), H - 1), min(max(x0 + n, 0), W - 1)
                    out[i, j] += wy * wx * grid[yy, xx]
    return out


def test_pos_embed_resample_matches_direct_bicubic():
    torch.manual_seed(0)
    pe = torch.randn(1, 1 + 4 * 5, 3)
    out = v.resample_pos_embed(pe, (4, 5), (6, 3))
    assert out.shape == (1, 1 + 18, 3)
    assert torch.equal(out[:, 0], pe[:, 0])  # cls entry untouched
    ref = bicubic_reference(pe[0, 1:].reshape(4, 5, 3).numpy().astype(np.float64), 6, 3)
    np.testing.assert_allclose(out[0, 1:].reshape(6, 3, 3).numpy(), ref, atol=1e-5)


# ---------------------------------------------------------------- segmentor
def test_sliding_windows_cover_like_mmseg():
    boxes = sliding_windows(512, 683, 512, 512, 480, 480)
    assert boxes == [(0, 512, 0, 512), (0, 512, 171, 683)]
    assert sliding_windows(300, 200, 512, 512, 480, 480) == [(0, 300, 0, 200)]


def test_slide_equals_whole_for_one_window_and_averages_overlaps():
    torch.manual_seed(0)
    cfg = tiny_cfg(backbone="VisionTransformer")
    seg = build_segmentor({**cfg, "test_cfg": dict(mode="slide", crop_size=(64, 64), stride=(48, 48))}).eval()
    img = torch.randint(0, 256, (1, 3, 64, 64)).float()
    with torch.no_grad():
        whole = torch.nn.functional.interpolate(seg(img).logits, (64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(seg.predict_logits(img), whole)
        wide = torch.randint(0, 256, (1, 3, 64, 112)).float()
        slid = seg.predict_logits(wide)
        left = torch.nn.functional.interpolate(seg(wide[..., :64]).logits, (64, 64), mode="bilinear", align_corners=False)
        right = torch.nn.functional.interpolate(seg(wide[..., 48:]).logits, (64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(slid[..., :48], left[..., :48])
    torch.testing.assert_close(slid[..., 48:64], (left[..., 48:] + right[..., :16]) / 2)
    torch.testing.assert_close(slid[..., 64:], right[..., 16:])


def test_slide_stitching_in_class_chunks_equals_stitching_all_classes_at_once():
    from clustvit.models import segmentor as sm

    torch.manual_seed(0)
    cfg = {**tiny_cfg(backbone="VisionTransformer"), "num_classes": 2 * sm._STITCH_CLASSES + 5}  # 3 chunks
    seg = build_segmentor({**cfg, "test_cfg": dict(mode="slide", crop_size=(64, 64), stride=(40, 40))}).eval()
    img = torch.randint(0, 256, (2, 3, 70, 112)).float()  # 2 x 3 windows per image, last ones shifted back
    boxes = sliding_windows(70, 112, 64, 64, 40, 40)
    with torch.no_grad():
        ref = torch.zeros(2, cfg["num_classes"], 70, 112)
        count = torch.zeros(70, 112)
        for y1, y2, x1, x2 in boxes:
            ref[..., y1:y2, x1:x2] += torch.nn.functional.interpolate(
                seg(img[..., y1:y2, x1:x2]).logits, (64, 64), mode="bilinear", align_corners=False
            )
            count[y1:y2, x1:x2] += 1
        torch.testing.assert_close(seg.predict_logits(img), ref / count, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # the autograd fallback gives the same numbers and a graph
        logits = seg.predict_logits(img[:1])
    assert logits.requires_grad
    torch.testing.assert_close(logits.detach(), ref[:1] / count, rtol=1e-5, atol=1e-5)


def test_oracle_clusters_use_pseudo_labels():
    seg = build_segmentor(tiny_cfg()).eval()
    masks = torch.zeros(1, 64, 64, dtype=torch.long)
    masks[:, :, 32:] = 1
    masks[:, :16, :16] = 2
    with torch.no_grad():
        out = seg(torch.zeros(1, 3, 64, 64), seg_cluster_ids(seg, masks))
    assert torch.equal(out.backbone.cluster_ids, pseudo_labels(masks, 3).flatten(1))


def test_oracle_clusters_at_sizes_that_are_not_whole_patches():
    seg = build_segmentor(tiny_cfg()).eval()
    masks = torch.zeros(1, 70, 90, dtype=torch.long)
    masks[:, :, 45:] = 1
    with torch.no_grad():
        out = seg(torch.zeros(1, 3, 70, 90), seg_cluster_ids(seg, masks))
    ids = out.backbone.cluster_ids.view(5, 6)  # ceil(70/16) x ceil(90/16)
    assert ids[4].eq(0).all() and ids[:, 5].eq(0).all()  # partial (padded) patches are kept
    assert torch.equal(ids[:4, :5], pseudo_labels(masks, 3)[0])


def test_unknown_config_keys_are_named():
    cfg = tiny_cfg()
    cfg["backbone"]["depthh"] = 3
    with pytest.raises(ConfigError, match=r"model\.backbone\.depthh"):
        build_segmentor(cfg)
    with pytest.raises(ConfigError, match="injection_point must lie in"):
        build_segmentor(tiny_cfg(**{}) | {"backbone": {**tiny_cfg()["backbone"], "injection_point": 3}})


# ---------------------------------------------------------------- weights
def test_converter_round_trip():
    seg = build_segmentor(tiny_cfg(head="UPerHead", out_indices=(0, 1, 2)))
    sd = seg.state_dict()
    official = to_official(sd)
    assert "backbone.layers.0.attn.attn.in_proj_weight" in official and "decode_head.psp_modules.0.1.conv.weight" in official
    back = convert_state_dict(official)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_whole_checkpoint_wrong_size_lists_keys(tmp_path: Path):
    seg = build_segmentor(tiny_cfg())
    other = build_segmentor(tiny_cfg(mlp_ratio=2.0))
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": to_official(other.state_dict())}, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch \(9\): backbone\.blocks\.0\.mlp\.fc1\.bias: checkpoint \(64,\) vs model \(128,\)"):
        load_checkpoint(seg, path)


@pytest.mark.parametrize("fmt", ["mmseg", "timm"])
def test_pretrained_imagenet_weights_load_with_pos_resample(tmp_path: Path, fmt: str):
    """An ImageNet ViT-384-style file (24x24 grid here 3x3, patch bias, classifier) initialises a 64 px ClustViT."""
    torch.manual_seed(0)
    src = v.VisionTransformer(img_size=48, embed_dim=32, depth=3, num_heads=2)
    sd = dict(src.state_dict())
    sd["patch_embed.proj.bias"] = torch.randn(32)
    if fmt == "timm":
        sd.update({"head.weight": torch.randn(10, 32), "head.bias": torch.randn(10)})
        path = tmp_path / "augreg.safetensors"
        from safetensors.torch import save_file

        save_file({k: t.contiguous() for k, t in sd.items()}, str(path))
    else:
        path = tmp_path / "vit_p16_384.pth"
        torch.save({"meta": {}, "state_dict": to_official(sd)}, path)
    model = cv.ClustViT(img_size=64, embed_dim=32, depth=3, num_heads=2, injection_point=1, num_clusters=2, cluster_mlp_size=8)
    cluster_before = model.cluster.fc1.weight.clone()
    report = load_pretrained_backbone(model, str(path))
    assert any("resampled pos_embed 3x3 -> 4x4" in r for r in report)
    torch.testing.assert_close(model.pos_embed, v.resample_pos_embed(src.pos_embed, (3, 3), (4, 4)))
    assert torch.equal(model.blocks[2].attn.qkv.weight, src.blocks[2].attn.qkv.weight)
    assert torch.equal(model.cluster.fc1.weight, cluster_before)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_not_executed(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Exploit(marker)}, f)
    with pytest.raises(CheckpointError, match="evil.pth: not a loadable checkpoint"):
        read_checkpoint(path)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path: Path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")


def test_pretrained_url_resolves_through_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Offline, the configs' URL loads from the torch.hub cache (how users provide the file by hand)."""
    url = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segmenter/vit_tiny_p16_384_20220308-cce8c795.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    src = v.VisionTransformer(img_size=48, embed_dim=32, depth=2, num_heads=2)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"state_dict": to_official(src.state_dict())}, cache / url.rsplit("/", 1)[1])
    model = v.VisionTransformer(img_size=48, embed_dim=32, depth=2, num_heads=2)
    assert load_pretrained_backbone(model, url) == []
    assert torch.equal(model.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)


def test_exported_attention_keeps_the_fused_kernel():
    """Head by head is eager-only: an exported graph (ONNX, torch.export) holds portable SDPA, never the
    oneDNN ops, even at a length (400 tokens) where eager float32 inference goes head by head."""
    torch.manual_seed(0)
    attn = v.Attention(32, 2).eval()
    x = torch.randn(1, 400, 32)
    with torch.no_grad():
        graph = torch.export.export(attn, (x,)).graph_module.code
        eager = attn(x)
    assert "scaled_dot_product_attention" in graph and "mkldnn" not in graph
    torch.testing.assert_close(torch.export.export(attn, (x,)).module()(x), eager, rtol=1e-5, atol=1e-6)
