"""`clustvit analyse clusters|features` and `clustvit weights split|merge` on the shared samples; images checked
by content."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from clustvit import cli
from clustvit.convert.official import segmentor_from_official
from clustvit.convert.weights import load_checkpoint
from clustvit.inference.api import build_model, resolve_config
from clustvit.models.build import build_segmentor
from clustvit.models.losses import pseudo_labels
from clustvit.viz.analysis import pca_rgb
from clustvit.viz.draw import TITLE_HEIGHT, distinct_colours

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
ADE = SHARED / "data" / "samples" / "ADE20K" / "ADEChallengeData2016"
SUIM = SHARED / "data" / "samples" / "SUIM" / "TEST" / "images"
FIXTURE = SHARED / "fixtures" / "reference" / "upernet_clustvit_mini.pt"
CONFIG = REPO / "config" / "clustvit" / "ade20k" / "segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip3.py"
# The ADE20K ClustViT shrunk to 2 blocks of width 32, images resized to fit 128x96 (683x512 -> 128x96: 8x6 tokens).
TINY = [
    "model.backbone.embed_dim=32", "model.backbone.depth=3", "model.backbone.num_heads=2",
    "model.backbone.injection_point=1", "model.backbone.out_indices=[2]", "model.backbone.cluster_mlp_size=32",
    "model.decode_head.embed_dim=32", "model.decode_head.num_heads=2", "model.decode_head.depth=1",
    "model.pretrained=None", "data.test_pipeline.scale=(128, 96)",
]
H, W = 96, 128


def need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing: {path}")
        pytest.skip(f"shared data missing: {path}")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = resolve_config(CONFIG, TINY)
    torch.manual_seed(7)
    model = build_segmentor(cfg["model"])
    model.backbone.cluster.fc2.weight.data *= 50  # spread the cluster arg-max so that tokens merge
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"format": "clustvit-v1", "model": model.state_dict(), "config": cfg, "iter": 1}, path)
    return path


def panes(path: Path, n: int) -> list[np.ndarray]:
    """Split a saved panel into its ``n`` panes (title strip removed)."""
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (TITLE_HEIGHT + H, n * W, 3)
    return [img[TITLE_HEIGHT:, i * W : (i + 1) * W] for i in range(n)]


def token_blocks(pane: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (h, w, 16*16, 3): the pixels of each 16x16 token."""
    return pane.reshape(H // 16, 16, W // 16, 16, 3).transpose(0, 2, 1, 3, 4).reshape(H // 16, W // 16, 256, 3)


def check_assignment_pane(image: np.ndarray, pane: np.ndarray, ids: np.ndarray, alpha: float = 0.6) -> None:
    """Kept tokens unchanged; merged tokens = image blended with their cluster's colour."""
    colours = np.asarray(distinct_colours(3), dtype=np.float32)
    img, got = token_blocks(image).astype(np.float32), token_blocks(pane).astype(np.float32)
    for (r, c), j in np.ndenumerate(ids):
        expect = img[r, c] if j == 0 else (1 - alpha) * img[r, c] + alpha * colours[j - 1]
        assert np.abs(got[r, c] - expect).max() <= 1, (r, c, j)


def test_clust_analysis_on_ade20k_with_a_checkpoint(tmp_path: Path, checkpoint: Path, capsys) -> None:
    need(ADE)
    out = tmp_path / "ca"
    argv = [str(CONFIG), str(checkpoint), "--data-root", str(ADE), "--split", "val", "--out", str(out), "--num", "2",
            "--cfg-options", *TINY]
    assert cli.main(["analyse", "clusters", *argv]) == 0
    assert "purity" in capsys.readouterr().out
    names = sorted(p.stem for p in (ADE / "images" / "validation").iterdir())
    assert sorted(p.name for p in out.glob("*.png")) == [f"{n}.png" for n in names]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and summary["images_reduced"] >= 1
    # The same model by hand: its cluster ids must be the ones painted.
    cfg = resolve_config(CONFIG, TINY)
    seg = build_model(cfg, checkpoint)
    merged_total = 0
    for name in names:
        image, target, assign, pred = panes(out / f"{name}.png", 4)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            o = seg(x).backbone
        ids = o.cluster_ids[0].view(H // 16, W // 16).numpy() * bool(o.merged[0])
        merged_total += int((ids > 0).sum())
        check_assignment_pane(image, target, ids)
        assert len(np.unique(pred.reshape(-1, 3), axis=0)) >= 1
        assert not np.array_equal(assign, np.full_like(assign, 96))  # the ground truth gives a target pane
    assert summary["merged_share"] == pytest.approx(merged_total / (2 * (H // 16) * (W // 16)))
    assert sum(c["tokens"] for c in summary["clusters"]) >= merged_total
    for c in summary["clusters"]:
        assert c["purity"] is None or 0 < c["purity"] <= 1


def test_clust_analysis_oracle_clusters_paint_the_pseudo_labels(tmp_path: Path) -> None:
    need(ADE)
    out = tmp_path / "oracle"
    argv = [str(CONFIG), "none", "--data-root", str(ADE), "--out", str(out), "--num", "1", "--oracle-clusters",
            "--cfg-options", *TINY]
    assert cli.main(["analyse", "clusters", *argv]) == 0
    (png,) = sorted(out.glob("*.png"))
    image, assign, target, _ = panes(png, 4)
    np.testing.assert_array_equal(assign, target)  # oracle ids are the pseudo-labels
    mask = np.asarray(Image.open(ADE / "annotations" / "validation" / png.name))
    mask = np.where(mask == 0, 255, mask.astype(np.int64) - 1)
    mask = cv2.resize(mask.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int64)  # as mmcv
    check_assignment_pane(image, target, pseudo_labels(torch.from_numpy(mask)[None], 3)[0].numpy())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pseudo_label_agreement"] == 1.0


def test_clust_analysis_on_plain_images_random_weights(tmp_path: Path) -> None:
    need(SUIM)
    out = tmp_path / "suim"
    argv = [str(CONFIG), "none", "--images", str(SUIM), "--out", str(out), "--num", "3", "--cfg-options", *TINY]
    assert cli.main(["analyse", "clusters", *argv]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    image, _, target, _ = panes(pngs[0], 4)
    assert (target == 96).all()  # no mask: the target pane is grey
    assert json.loads((out / "summary.json").read_text())["clusters"][0]["purity"] is None
    assert cli.main(["analyse", "clusters", str(CONFIG), "none", "--images", str(SUIM), "--oracle-clusters"]) == 2


def test_show_intermediate_features(tmp_path: Path, checkpoint: Path) -> None:
    img = need(SUIM) / "d_r_598_.jpg"
    for ckpt in ("none", str(checkpoint)):
        argv = [str(CONFIG), ckpt, str(img), "--out", str(tmp_path / ckpt[-4:]), "--cfg-options", *TINY]
        assert cli.main(["analyse", "features", *argv]) == 0
    grid = np.asarray(Image.open(tmp_path / ".pth" / "d_r_598__features.png").convert("RGB"))
    layers = (0, 1, 2)  # default: ip - 1, ip, last
    assert grid.shape == ((1 + len(layers)) * (TITLE_HEIGHT + H), 3 * W, 3)
    rows = [grid[k * (TITLE_HEIGHT + H) + TITLE_HEIGHT : (k + 1) * (TITLE_HEIGHT + H)] for k in range(4)]
    seg = build_model(resolve_config(CONFIG, TINY), checkpoint)
    x = torch.from_numpy(rows[0][:, :W].copy()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        ids = seg(x).backbone.cluster_ids[0].view(H // 16, W // 16).numpy()
    for k in (1, 2):  # block ip-1 (merged at injection) and block ip (packed): a cluster is one token
        merged = token_blocks(rows[k][:, W : 2 * W])
        assert (merged == merged[:, :, :1]).all()  # each token one colour
        for j in range(1, 4):
            colours = {tuple(merged[r, c, 0]) for r, c in zip(*np.nonzero(ids == j))}
            assert len(colours) <= 1, f"cluster {j} shows {len(colours)} colours after merging"
    before = token_blocks(rows[1][:, :W])
    assert len({tuple(c) for c in before[:, :, 0].reshape(-1, 3)}) > 4  # full-length features vary


def test_pca_rgb_separates_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 5
    feats = centres.repeat_interleave(10, 0) + 0.01 * torch.randn(30, 16, generator=g)
    rgb = pca_rgb(feats)
    assert rgb.shape == (30, 3) and rgb.dtype == np.uint8
    means = [rgb[i * 10 : (i + 1) * 10].astype(float).mean(0) for i in range(3)]
    assert min(np.abs(means[a] - means[b]).max() for a, b in ((0, 1), (0, 2), (1, 2))) > 50


def test_split_weights_round_trip_ours_and_official(tmp_path: Path, checkpoint: Path) -> None:
    assert cli.main(["weights", "split", str(checkpoint), "--out-dir", str(tmp_path / "ours")]) == 0
    with safe_open(str(tmp_path / "ours" / "backbone.safetensors"), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert "cls_token" in keys and "cluster.fc1.weight" in keys and not any(k.startswith("backbone.") for k in keys)
    assert json.loads(meta["config"])["model"]["backbone"]["embed_dim"] == 32
    assert cli.main(["weights", "merge", str(tmp_path / "ours"), "--out", str(tmp_path / "ours.pth")]) == 0
    merged = torch.load(tmp_path / "ours.pth", weights_only=True)
    original = torch.load(checkpoint, weights_only=True)["model"]
    assert merged["model"].keys() == original.keys()
    assert all(torch.equal(merged["model"][k], v) for k, v in original.items())

    d = torch.load(need(FIXTURE), weights_only=True)
    torch.save(d["state_dict"], tmp_path / "official.pth")
    assert cli.main(["weights", "split", str(tmp_path / "official.pth"), "--out-dir", str(tmp_path / "off")]) == 0
    assert cli.main(["weights", "merge", str(tmp_path / "off"), "--out", str(tmp_path / "off.pth")]) == 0
    a, b = segmentor_from_official(d["config"]), segmentor_from_official(d["config"])
    load_checkpoint(a, tmp_path / "official.pth")
    load_checkpoint(b, tmp_path / "off.pth")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert cli.main(["weights", "split", str(tmp_path / "missing.pth")]) == 2
