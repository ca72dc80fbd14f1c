"""Parity with the official implementation: every fixture file, dispatched on structure, never on name.

Folder: $DYNSEG_PARITY_FIXTURES (default ../shared/fixtures/reference). Missing folder: skip locally,
fail under CI. Tolerances are the fixture README's contract.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dynseg.accel import accelerate, describe
from dynseg.convert.official import backbone_cfg, segmentor_from_official
from dynseg.convert.weights import convert_state_dict, load_checkpoint, load_strict
from dynseg.losses import clust_loss, patch_values, pseudo_labels
from dynseg.models.build import build_backbone
from dynseg.models.segmentor import Segmentor

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
FOLDER = Path(os.environ.get("DYNSEG_PARITY_FIXTURES", DEFAULT))
FILES = sorted(FOLDER.glob("*.pt")) if FOLDER.is_dir() else []

FEAT = dict(atol=1e-5, rtol=1e-4)
LOGITS = dict(atol=5e-5, rtol=1e-4)
LOSS = dict(atol=1e-6, rtol=0.0)
# Whether the models under test run accelerated (``dynseg.accel``); set per test by ``test_fixture``.
ACCELERATED: dict[int, bool] = {0: False}


def ready(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode, accelerated when the current test asks for it."""
    model = model.eval()
    if ACCELERATED[0]:
        accelerate(model, "cpu")
        assert describe(model)["onednn_linear"] > 0 or not torch.backends.mkldnn.is_available()
    return model


def test_fixture_folder_present():
    if not FILES:
        if os.environ.get("CI"):
            pytest.fail(f"parity fixtures missing: {FOLDER}")
        pytest.skip(f"parity fixtures missing: {FOLDER}")


def close(ours: torch.Tensor, ref: torch.Tensor, what: str, tol: dict) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    err = (ours.float() - ref.float()).abs().max().item() if ref.numel() else 0.0
    assert torch.allclose(ours.float(), ref.float(), **tol), f"{what}: max abs error {err:.3g}"


def run_backbone(cfg: dict, state_dict: dict, inputs: torch.Tensor):
    model = build_backbone(backbone_cfg(cfg), where="fixture.config")
    load_strict(model, convert_state_dict(state_dict), source="fixture state_dict")
    model = ready(model)
    with torch.no_grad():
        return model(inputs, return_intermediates=True) if cfg["type"] == "ClustViT" else model(inputs)


def check_backbone(out, ref: dict, prefix: str) -> None:
    assert len(out.features) == len(ref["outs"]), f"{prefix}: number of outputs"
    for i, (a, b) in enumerate(zip(out.features, ref["outs"])):
        close(a, b, f"{prefix} outs[{i}]", FEAT)
    if "clust_logits" not in ref:
        return
    close(out.clust_logits[None], ref["clust_logits"], f"{prefix} clust_logits", FEAT)
    assert torch.equal(out.cluster_ids, ref["cluster_ids"]), f"{prefix}: cluster_ids differ"
    K = ref["clust_logits"].shape[-1] - 1
    counts = torch.stack([torch.bincount(r, minlength=K + 1) for r in out.cluster_ids])
    assert torch.equal(counts, ref["cluster_counts"]), f"{prefix}: cluster_counts differ"
    assert torch.equal((out.cluster_ids == 0).sum(1), ref["num_kept"]), f"{prefix}: num_kept differ"
    assert bool(out.merged.any()) == bool(ref["merged"]), f"{prefix}: merge decision differs"
    debug = ref.get("debug") or {}
    if "key_padding_mask" in debug:
        kpm = debug["key_padding_mask"]
        if kpm is None:
            assert not out.merged.any(), f"{prefix}: official did not reduce, we did"
        else:
            # Official pads every image to 1 + M_max + K; ours packs without padding. Same content:
            # the unpadded length of every image equals our sequence length.
            assert out.tokens_per_block[:, -1].tolist() == (~kpm).sum(1).tolist(), f"{prefix}: reduced lengths"


def check_file(d: dict) -> None:
    cfg = d["config"]
    if "subcases" in d:
        assert cfg["type"] == "ClustViT"
        for name, sc in d["subcases"].items():
            sd = {**d["state_dict"], **sc["state_dict_overrides"]}
            out = run_backbone(cfg, sd, sc["inputs"])
            ref = sc["outputs"]
            alone = ref.get("each_image_alone")
            if alone is not None:
                # Per-image semantics: our batched result equals the official result for each image *alone*.
                for b, e in enumerate(alone):
                    close(out.features[0][b : b + 1], e["outs"][0], f"{name} image {b} vs alone", FEAT)
                    assert bool(out.merged[b]) == bool(e["merged"]), f"{name} image {b}: merge decision"
                    single = run_backbone(cfg, sd, sc["inputs"][b : b + 1])
                    close(single.features[0], e["outs"][0], f"{name} image {b} run alone", FEAT)
                close(out.clust_logits[None], ref["clust_logits"], f"{name} clust_logits", FEAT)
                assert torch.equal(out.cluster_ids, ref["cluster_ids"])
            else:
                check_backbone(out, ref, name)
            if "max_abs_diff_vs_vit_mini" in ref:
                vit_cfg = {k: v for k, v in cfg.items() if k not in ("num_clusters", "injection_points", "cluster_mlp_size", "init_weights_zero")}
                vit_cfg["type"] = "VisionTransformer"
                vit_sd = {k: v for k, v in sd.items() if not k.startswith(("clusterer.", "expand_mlp."))}
                plain = run_backbone(vit_cfg, vit_sd, sc["inputs"])
                diff = (plain.features[-1] - out.features[-1]).abs().max().item()
                assert diff <= ref["max_abs_diff_vs_vit_mini"] + 1e-6, f"{name}: differs from plain ViT by {diff}"
    elif cfg["type"] in ("ClustViT", "VisionTransformer"):
        out = run_backbone(cfg, d["state_dict"], d["inputs"])
        check_backbone(out, d["outputs"], d["case"])
        if "resize" in d:
            r = run_backbone(cfg, d["state_dict"], d["resize"]["inputs"])
            check_backbone(r, d["resize"]["outputs"], f"{d['case']} resize")
            dbg = d["resize"]["outputs"].get("debug") or {}
            if "pos_embed_resized" in dbg:
                from dynseg.models.vit import resample_pos_embed

                model = build_backbone(backbone_cfg(cfg))
                load_strict(model, convert_state_dict(d["state_dict"]))
                h, w = (s // 16 for s in d["resize"]["inputs"].shape[2:])
                close(resample_pos_embed(model.pos_embed, model.grid, (h, w)), dbg["pos_embed_resized"], "pos_embed_resized", FEAT)
    elif cfg["type"] == "DynSegEncoderDecoder":
        check_segmentor(d)
    elif cfg["type"] == "ClustLoss":
        check_loss(d)
    else:
        pytest.fail(f"unknown fixture structure: config type {cfg.get('type')!r}")


def check_segmentor(d: dict) -> None:
    cfg = d["config"]
    seg: Segmentor = segmentor_from_official(cfg)
    sd = convert_state_dict(d["state_dict"])
    load_strict(seg, sd, source=f"{d['case']} state_dict")
    seg = ready(seg)
    x = d["inputs"]
    with torch.no_grad():
        feats = seg.backbone(x)
        check_backbone(feats, d["outputs"], d["case"])
        logits = seg.decode_head(feats.features)
    ref = d["outputs"]
    close(logits, ref["seg_logits"], f"{d['case']} seg_logits", LOGITS)
    up = F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=False)
    if "seg_logits_upsampled" in ref:
        close(up, ref["seg_logits_upsampled"], f"{d['case']} seg_logits_upsampled", LOGITS)
    else:
        total = up.double().sum().item()
        want = float(ref["seg_logits_upsampled_sum"])
        assert abs(total - want) <= 1e-5 * abs(want), f"upsampled sum {total} vs {want}"
    if "preprocess" in d:
        p = d["preprocess"]
        s = Segmentor(seg.backbone, seg.decode_head, seg.num_classes, mean=p["mean"].tolist(), std=p["std"].tolist())
        rgb = p["raw_bgr_uint8"].flip(1)  # OpenCV reads BGR; our pipeline takes RGB
        close(s.normalise(rgb), p["normalised"], "preprocess.normalised", dict(atol=1e-6, rtol=0.0))


def check_loss(d: dict) -> None:
    cfg, inp, ref = d["config"], d["inputs"], d["outputs"]
    assert cfg.get("patch_size", 16) == 16
    K = cfg["num_clusters"]
    assert torch.equal(patch_values(inp["masks"]), ref["patch_values"]), "patch_values differ"
    assert torch.equal(pseudo_labels(inp["masks"], K), ref["pseudo_labels"]), "pseudo_labels differ"
    logits = inp["clust_logits"][0]  # (B, N, K+1)
    loss = clust_loss(logits, inp["masks"], K, cfg["loss_weight"])
    close(loss, ref["loss"], "loss", LOSS)
    close(loss, ref["loss_reduction_none"], "loss_reduction_none", LOSS)
    target = pseudo_labels(inp["masks"], K).flatten(1)
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
    close(ce, ref["ce_per_token_unweighted"], "ce_per_token_unweighted", LOSS)


@pytest.mark.parametrize("form", ["plain", "accelerated"])
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_fixture(path: Path, form: str, monkeypatch: pytest.MonkeyPatch):
    """Every fixture, on the plain model and on the accelerated one (``dynseg.accel``)."""
    monkeypatch.setitem(ACCELERATED, 0, form == "accelerated")
    torch.manual_seed(0)
    check_file(torch.load(path, weights_only=True))


def test_unknown_fixture_fails(tmp_path: Path):
    """A file of unknown structure must fail the suite, not pass it."""
    with pytest.raises(pytest.fail.Exception):
        check_file({"case": "x", "config": {"type": "Mystery"}})


@pytest.mark.skipif(not FILES, reason="fixtures missing")
def test_official_checkpoint_file_loads(tmp_path: Path):
    """A segmentor fixture saved as an mmseg checkpoint ({'meta', 'state_dict'}) loads through load_checkpoint."""
    d = torch.load(FOLDER / "segmenter_clustvit_mini.pt", weights_only=True) if (FOLDER / "segmenter_clustvit_mini.pt").exists() else None
    if d is None:
        pytest.skip("no segmentor fixture")
    path = tmp_path / "iter_160000.pth"
    torch.save({"meta": {"iter": 160000}, "state_dict": d["state_dict"]}, path)
    seg = segmentor_from_official(d["config"]).eval()
    load_checkpoint(seg, path)
    with torch.no_grad():
        logits = seg.decode_head(seg.backbone(d["inputs"]).features)
    close(logits, d["outputs"]["seg_logits"], "seg_logits via load_checkpoint", LOGITS)
