"""``clustvit data plan``: the merge forecast (clustvit/bench/forecast.py) is exact where it derives, and
agrees with ``clustvit bench flops --oracle-clusters`` on the shared SUIM samples."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import converted_suim
from PIL import Image

from clustvit.bench import common as bench
from clustvit.bench import forecast
from clustvit.bench.flops import count_flops
from clustvit.cli import main
from clustvit.configs import load_config
from clustvit.models.build import build_segmentor
from clustvit.models.oracle import oracle_cluster_ids

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
DEMO_CLUST = str(ROOT / "config/demo/segmenter_clustvit-demo_synthetic.py")  # width 96, 6 blocks, ip 2
SUIM_K3_IP3 = "segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3"


def _real_flops(model_cfg: dict, sample: bench.Sample) -> int:
    """The whole path counted with real weights and real compute (no ShapesOnly)."""
    torch.manual_seed(0)
    seg = build_segmentor({**model_cfg, "pretrained": None}).eval()
    return bench.flops_per_image(seg, [sample], oracle=True)[0]


def _expected_tokens(mask: torch.Tensor, k: int) -> int:
    """1 + kept + k for a reduced image, 1 + N when every patch carries one id (models/merging.py's rule)."""
    ids = oracle_cluster_ids(mask[None], k, 16)[0]
    return int(1 + (ids == 0).sum() + k) if (ids != ids[0]).any() else 1 + ids.numel()


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_derived_injection_points_equal_real_counts(mode: str) -> None:
    """Every ip's FLOPs (derived from the block cost) equal a real count of that ClustViT, one window or
    several (slide: a batch of windows runs packed); the ViT baseline equals a real ViT count."""
    cfg = load_config(DEMO_CLUST)["model"]
    if mode == "slide":
        cfg["test_cfg"] = dict(mode="slide", crop_size=(64, 64), stride=(48, 48))
    sample = bench.synthetic_sample((96, 160), seed=3)
    plan = forecast.forecast(cfg, [sample], ks=(3,))
    image = plan.per_image[sample.name]
    assert len(image["full"]) == (6 if mode == "slide" else 1)  # 2 x 3 windows
    assert plan.counted_ip == 2 and sorted(image["gflops"][3]) == [1, 2, 3, 4, 5]
    for ip, gflops in image["gflops"][3].items():
        real = _real_flops({**cfg, "backbone": {**cfg["backbone"], "injection_point": ip}}, sample)
        assert gflops * 1e9 == pytest.approx(real, rel=1e-12, abs=0.5), ip
    torch.manual_seed(0)
    vit = build_segmentor({**forecast.vit_variant(cfg), "pretrained": None}).eval()
    assert plan.vit_gflops_mean * 1e9 == pytest.approx(bench.flops_per_image(vit, [sample])[0], abs=0.5)


def test_block_cost_is_the_closed_form() -> None:
    """a = 24 C^2 + 2 C (qkv, proj, MLP as 2 x MACs; two residual adds), b = 4 C (QK^T and AV)."""
    seg = forecast.counting_model(load_config(DEMO_CLUST)["model"])
    cost = forecast.block_cost(seg.backbone.blocks[0], 96)
    assert (cost.linear, cost.quadratic) == (24 * 96 * 96 + 2 * 96, 4 * 96)
    with forecast.ShapesOnly():
        assert count_flops(seg.backbone.blocks[3], torch.zeros(1, 37, 96))[0] == cost(37)


def _folder(root: Path, masks: list[np.ndarray]) -> Path:
    """A flat labelled folder: images/ + masks/ (index PNGs) + classes.txt."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, mask in enumerate(masks):
        Image.fromarray(rng.integers(0, 255, (*mask.shape, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"im{i}.png")
    (root / "classes.txt").write_text("a\nb\nc\nd\n")
    return root


def _halves(n: int) -> list[np.ndarray]:
    """Two classes split at a patch border, then a quarter of one class more per image."""
    out = []
    for i in range(n):
        m = np.zeros((64, 64), np.uint8)
        m[:, 32:] = 1
        m[: 16 * (i % 3), :16] = 2
        out.append(m)
    return out


def test_plan_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Default model (ClustViT-B's config, the folder's 4 classes) at --size 64: table, JSON, plot."""
    root = _folder(tmp_path / "data", _halves(8))
    out = tmp_path / "out"
    assert main(["data", "plan", str(root), "--size", "64", "--split", "test", "--val-fraction", "0.5",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "plan.json").read_text())
    assert (out / "plan.png").stat().st_size > 0
    assert res["model"] == "clustvit-b" and res["num_images"] == res["images_in_split"] >= 1
    assert res["depth"] == 12 and len(res["rows"]) == 5 * 11  # k 1..5 x ip 1..11 in the JSON
    assert sum(line[:1].isdigit() for line in printed.splitlines()) == 5 * 6  # ip 1..6 printed
    assert "not a measurement" in printed and "train ClustViT with k=" in printed
    samples = bench.load_samples({"data": dict(type="Folder", root=str(root), test_pipeline=dict(
        scale=(64, 64), keep_ratio=False), dataset_kwargs=dict(val_fraction=0.5))}, None, "test")
    for k in forecast.KS:
        for s in samples:
            assert res["per_image"][s.name]["tokens"][str(k)] == [_expected_tokens(s.mask, k)]
    # Two classes: k=2 merges both, k=1 about half as much: the smallest k near the best is 2 (at ip 3).
    assert res["recommended"] == {"k": 2, "ip": 3}
    r = {(row["k"], row["ip"]): row for row in res["rows"]}
    assert r[2, 3]["speedup"] == pytest.approx(1 / r[2, 3]["flop_ratio"]) and r[2, 1]["speedup"] > r[2, 3]["speedup"]
    assert r[1, 3]["tokens_mean"] > r[2, 3]["tokens_mean"]


def test_plan_warns_when_merging_does_not_pay(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Stripes one pixel wide: no homogeneous patch, nothing merges, and the plan says to train the ViT."""
    stripes = np.tile(np.arange(64) % 2, (64, 1)).astype(np.uint8)
    root = _folder(tmp_path / "data", [stripes] * 3)
    out = tmp_path / "out"
    assert main(["data", "plan", str(root), "--model", DEMO_CLUST, "--size", "64", "--val-fraction", "0.5",
                 "--max-images", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "plan.json").read_text())
    assert res["num_images"] == 1 and res["recommended"] is None
    assert "merging will not pay on these images; train the ViT" in printed
    assert all(row["tokens_mean"] == 17 and row["flop_ratio"] > 1 for row in res["rows"])  # the Cluster MLP costs


def test_plan_rejects_a_vit_model_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _folder(tmp_path / "data", _halves(4))
    vit = str(ROOT / "config/demo/segmenter_vit-demo_synthetic.py")
    assert main(["data", "plan", str(root), "--model", vit, "--size", "64", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the forecast needs a ClustViT model") and "\n" not in err


def test_agrees_with_bench_flops_on_suim_samples(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """ClustViT-B (SUIM, k=3, ip=3) on 2 shared SUIM samples: the plan's k=3/ip=3 GFLOPs per image are
    ``clustvit bench flops --oracle-clusters``'s (within 1%; in fact equal), its tokens the pseudo-labels'."""
    root = converted_suim(tmp_path / "suim")
    assert main(["bench", "flops", SUIM_K3_IP3, "--data-root", str(root), "--split", "test", "--limit", "2",
                 "--oracle-clusters", "--work-dir", str(tmp_path / "bf")]) == 0
    assert main(["data", "plan", SUIM_K3_IP3, "--cfg-options", f"data.root={root}", "--split", "test",
                 "--max-images", "2", "--out", str(tmp_path / "plan")]) == 0
    bench_flops = json.loads((tmp_path / "bf/gflops.json").read_text())
    plan = json.loads((tmp_path / "plan/plan.json").read_text())
    assert plan["model"] == SUIM_K3_IP3 and plan["num_images"] == 2
    for name, gflops in bench_flops["per_image"].items():
        assert plan["per_image"][name]["gflops"]["3"]["3"] == pytest.approx(gflops, rel=0.01)
        assert plan["per_image"][name]["gflops"]["3"]["3"] == pytest.approx(gflops, rel=1e-9)
    row = next(r for r in plan["rows"] if r["k"] == 3 and r["ip"] == 3)
    assert row["gflops_mean"] == pytest.approx(bench_flops["gflops_mean"], rel=0.01)
    samples = bench.load_samples(load_config(SUIM_K3_IP3, [f"data.root={root}"]), None, "test", 2)
    tokens = [_expected_tokens(s.mask, 3) for s in samples]
    assert row["tokens_mean"] == pytest.approx(np.mean(tokens), rel=0.01)
    assert plan["vit_gflops_mean"] == pytest.approx(252.28, abs=0.01)  # docs/BENCHMARKS.md's Segmenter ViT-B, 8 classes
