"""Configs: every shipped config builds its model and data pipeline; inheritance, overrides, strict keys."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from clustvit.configs import PACKAGED, ConfigError, list_configs, load_config, parse_overrides, save_config
from clustvit.data.build import build_pipeline
from clustvit.models.build import build_segmentor

REPO = Path(__file__).resolve().parents[1]
CONFIGS = list_configs()

# The official release's names (issue 3); each must exist.
OFFICIAL = [
    *(f"clustvit/ade20k/segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_{s}.py"
      for s in ("k1_ip3", "k2_ip3", "k3_ip0", "k3_ip2", "k3_ip3", "k3_ip4", "k3_ip5", "k3_ip6", "k4_ip3", "k5_ip3")),
    *(f"clustvit/ade20k/segmenter_clustvit-{s}_mask_1xb8-160k_ade20k-512x512_k3_ip3.py" for s in "tsl"),
    "clustvit/ade20k/upernet_clustvit-b_1xb8-160k_ade20k-512x512_k3_ip3.py",
    "clustvit/ade20k/upernet_clustvit-b_1xb8-80k_ade20k-512x512_k3_ip4.py",
    "clustvit/ade20k/upernet_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip4.py",
    *(f"clustvit/others/{h}_1xb8-80k_{d}-512x512_k3_ip3.py"
      for h in ("segmenter_clustvit-b_mask", "upernet_clustvit-b") for d in ("suim", "rumexweeds")),
    *(f"vit/segmenter_vit-{s}_mask_1xb8-160k_ade20k-512x512.py" for s in "tsbl"),
    *(f"vit/segmenter_vit-b_mask_1xb8-80k_{d}-512x512.py" for d in ("suim", "rumexweeds")),
    "vit/upernet_vit-b_1xb8-160k_ade20k-512x512.py",
    *(f"vit/upernet_vit-b_1xb8-80k_{d}-512x512.py" for d in ("suim", "rumexweeds")),
    *(f"cts/{h}_1xb8-{s}-512x512.py" for h in ("segmenter_cts-b_mask", "upernet_cts-b_mask")
      for s in ("160k_ade20k", "80k_suim", "80k_rumexweeds")),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models are dominated by per-op overhead, which extra threads only add to."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_official_name_exists() -> None:
    missing = [n for n in OFFICIAL if not (REPO / "config" / n).is_file()]
    assert not missing
    assert len(OFFICIAL) == 35


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PACKAGED)))
def test_config_builds(path: Path) -> None:
    cfg = load_config(path)
    # Official schedule facts hold in every paper config (the demo configs are small on purpose).
    if "demo" not in path.parts:
        assert cfg["optimizer"] == {"type": "SGD", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0}
        assert cfg["data"]["batch_size"] == 8 and cfg["schedule"]["power"] == 0.9
        assert cfg["schedule"]["min_lr"] == 1e-4
        iters = 160_000 if "160k" in path.name or "80k_ade20k" in path.name else 80_000
        assert cfg["schedule"]["max_iters"] == iters
        assert cfg["schedule"]["checkpoint_interval"] == iters // 10 == cfg["schedule"]["val_interval"]
        assert cfg["model"]["pretrained"].startswith("https://download.openmmlab.com/")
    if "ClustViT" == cfg["model"]["backbone"]["type"]:
        assert cfg["model"]["clust_loss_weight"] == 0.1
    # Build a narrow copy (same depth, injection point, clusters, heads' types, out_indices) and run a
    # training step on a 64x64 image: full-width ViT-L would take seconds per config on 2 cores.
    model_cfg = json.loads(json.dumps(cfg["model"]))
    bb, head = model_cfg["backbone"], model_cfg["decode_head"]
    bb.update(embed_dim=16, num_heads=2, img_size=(64, 64))
    if "cluster_mlp_size" in bb:
        bb["cluster_mlp_size"] = 8
    if "num_shared" in bb:
        bb["num_shared"] = 2  # 2x2 groups of the 4x4 token grid at 64x64
        assert bb.pop("policy_weights") == "weights/policynet.safetensors"  # user-trained: not in the repo
    head.update({"channels": 8} if head["type"] == "UPerHead" else {"embed_dim": 16, "num_heads": 2})
    torch.manual_seed(0)
    model = build_segmentor(model_cfg)
    assert len(model.backbone.blocks) == cfg["model"]["backbone"]["depth"]
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    masks = torch.randint(0, model.num_classes, (2, 64, 64))
    losses = model.loss(images, masks)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and ("loss_clust" in losses) == (bb["type"] == "ClustViT")
    # The data pipelines build and run on a small random image, without any dataset on disk.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (100, 150), dtype=np.uint8)
    img, msk = build_pipeline(cfg["data"], "train")(image, mask, rng)
    crop = tuple(cfg["data"]["train_pipeline"]["crop_size"])
    assert img.shape[:2] == crop and msk.shape == crop  # smaller than the crop: padded
    img, msk = build_pipeline(cfg["data"], "test")(image, mask, rng)
    assert msk.shape == (100, 150)  # test masks keep the original size


def _restated(body: dict, base: dict, path: tuple[str, ...] = ()) -> list[str]:
    """Keys of a leaf's own dicts whose value is exactly what its bases already resolve to."""
    found = []
    for key, value in body.items():
        here = (*path, key)
        if key not in base:
            continue
        if isinstance(value, dict):
            if not value.get("_delete_") and isinstance(base[key], dict):  # a replaced dict restates on purpose
                found += _restated(value, base[key], here)
        elif repr(value) == repr(base[key]):  # repr keeps 0 / 0.0, True / 1 and tuples / lists apart
            found.append(".".join(here))
    return found


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PACKAGED)))
def test_leaf_is_a_diff_over_its_bases(tmp_path: Path, path: Path) -> None:
    # The paper's shared values (SGD lr 1e-3, no weight decay, 8 images a batch, class counts, ...) live in
    # config/_base_/: a leaf holds only what makes it different, so no leaf value may repeat an inherited one.
    ns = runpy.run_path(str(path))
    bases = ns.get("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    only_bases = _write(tmp_path / "bases.py", f"_base_ = {[str((path.parent / b).resolve()) for b in bases]!r}\n")
    inherited = load_config(only_bases, validate=False)
    body = {k: v for k, v in ns.items() if not k.startswith("_") and isinstance(v, dict)}
    assert _restated(body, inherited) == []


def test_restated_values_are_found() -> None:
    base = {"optimizer": {"lr": 0.001, "weight_decay": 0.0}, "data": {"scale": (512, 512), "batch_size": 8}}
    body = {"optimizer": {"lr": 0.001, "weight_decay": 0}, "data": {"scale": [512, 512], "batch_size": 8}}
    assert _restated(body, base) == ["optimizer.lr", "data.batch_size"]  # 0 for 0.0 and a list for a tuple differ
    assert _restated({"data": {"_delete_": True, "batch_size": 8}}, base) == []


# The seed's pattern {head}_{backbone}_{schedule}_{dataset}_{resolution}_k{clusters}_ip{injection_point}, as the
# official names spell it: "_mask" may follow the backbone (it marks no single property: Segmenter leaves, the
# cluster-MLP-3096 UPerNet leaf and the CTS UPerNet leaves carry it), dataset and resolution are joined by "-",
# and only ClustViT names carry k and ip.
NAME = re.compile(r"(segmenter|upernet)_(clustvit|vit|cts)-([tsbl])(?:_mask)?_1xb(\d+)-(\d+)k_(ade20k|suim|rumexweeds)"
                  r"-(\d+)x\d+(?:_k(\d+)_ip(\d+))?\.py")
# Official names whose values say otherwise; we keep the official values so that the paper's numbers reproduce.
NAME_EXCEPTIONS = {
    "segmenter_clustvit-l_mask_1xb8-160k_ade20k-512x512_k3_ip3.py": {"resolution": 640},
    "segmenter_vit-l_mask_1xb8-160k_ade20k-512x512.py": {"resolution": 640},
    "upernet_clustvit-b_1xb8-80k_ade20k-512x512_k3_ip4.py": {"kilo_iters": 160},
}


@pytest.mark.parametrize("path", [p for p in CONFIGS if "demo" not in p.parts], ids=lambda p: p.name)
def test_name_states_the_resolved_config(path: Path) -> None:
    match = NAME.fullmatch(path.name)
    assert match, f"{path.name} does not follow the naming pattern"
    head, backbone, size, batch, kilo_iters, dataset, resolution, k, ip = match.groups()
    named = {"head": {"segmenter": "SegmenterMaskTransformerHead", "upernet": "UPerHead"}[head],
             "backbone": {"clustvit": "ClustViT", "vit": "VisionTransformer", "cts": "CTSViT"}[backbone],
             "width": {"t": 192, "s": 384, "b": 768, "l": 1024}[size], "batch": int(batch),
             "kilo_iters": int(kilo_iters), "dataset": {"ade20k": "ADE20K", "suim": "SUIM", "rumexweeds": "RumexWeeds"}[dataset],
             "resolution": int(resolution), "k": k and int(k), "ip": ip and int(ip)}
    named.update(NAME_EXCEPTIONS.get(path.name, {}))
    cfg = load_config(path)
    bb = cfg["model"]["backbone"]
    assert named == {
        "head": cfg["model"]["decode_head"]["type"], "backbone": bb["type"], "width": bb["embed_dim"],
        "batch": cfg["data"]["batch_size"], "kilo_iters": cfg["schedule"]["max_iters"] / 1000,
        "dataset": cfg["data"]["type"], "resolution": cfg["data"]["train_pipeline"]["crop_size"][0],
        "k": bb.get("num_clusters"), "ip": bb.get("injection_point"),
    }
    assert tuple(cfg["data"]["train_pipeline"]["crop_size"]) == tuple(bb["img_size"]) == (named["resolution"],) * 2


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def leaf(tmp_path: Path) -> Path:
    """A two-level chain over the real demo config."""
    demo = REPO / "config/demo/segmenter_clustvit-demo_synthetic.py"
    _write(tmp_path / "base.py", f'_base_ = "{demo}"\nruntime = dict(seed=7)\n')
    return _write(tmp_path / "sub/leaf.py", '_base_ = ["../base.py"]\nmodel = dict(backbone=dict(depth=5, out_indices=(4,)))\n')


def test_inheritance_and_overrides(leaf: Path) -> None:
    cfg = load_config(leaf, ["model.backbone.num_clusters=2", "data.root=somewhere", "schedule.max_iters=10",
                             "model.test_cfg.stride=(128, 128)"])
    assert cfg["runtime"]["seed"] == 7 and cfg["runtime"]["keep_checkpoints"] == 3  # merged, not replaced
    assert cfg["model"]["backbone"]["depth"] == 5 and cfg["model"]["backbone"]["embed_dim"] == 96
    assert cfg["model"]["backbone"]["num_clusters"] == 2 and cfg["schedule"]["max_iters"] == 10
    assert cfg["data"]["root"] == "somewhere" and cfg["model"]["test_cfg"]["stride"] == (128, 128)
    assert parse_overrides(["a.b.c=[1, 2]", "x=True", "y=1e-3"]) == {"a": {"b": {"c": [1, 2]}}, "x": True, "y": 1e-3}


def test_delete_replaces_instead_of_merging(tmp_path: Path, leaf: Path) -> None:
    other = _write(tmp_path / "other.py", '_base_ = "sub/leaf.py"\n'
                   'optimizer = dict(_delete_=True, type="SGD", lr=0.5)\n')
    cfg = load_config(other)
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.5}  # the demo's AdamW keys are gone
    # The demo ViT replaces the whole ClustViT backbone the same way: no cluster keys survive.
    vit = load_config(REPO / "config/demo/segmenter_vit-demo_synthetic.py")
    assert vit["model"]["backbone"]["type"] == "VisionTransformer" and "num_clusters" not in vit["model"]["backbone"]


@pytest.mark.parametrize("text, key", [
    ("model = dict(backbone=dict(num_cluster=3))\n", "model.backbone.num_cluster"),
    ("model = dict(decode_head=dict(channels=3))\n", "model.decode_head.channels"),
    ("data = dict(train_pipeline=dict(crop=(64, 64)))\n", "data.train_pipeline.crop"),
    ("schedule = dict(max_iter=5)\n", "schedule.max_iter"),
    ("learning_rate = 0.1\n", "learning_rate"),
])
def test_unknown_key_names_key_and_file(tmp_path: Path, leaf: Path, text: str, key: str) -> None:
    # The unknown key sits in a middle file; the error must name that file, not the leaf.
    middle = _write(tmp_path / "middle.py", '_base_ = "sub/leaf.py"\n' + text)
    bottom = _write(tmp_path / "bottom.py", '_base_ = "middle.py"\nruntime = dict(seed=1)\n')
    with pytest.raises(ConfigError) as err:
        load_config(bottom)
    msg = str(err.value)
    assert key in msg and str(middle) in msg and "unknown key" in msg and "\n" not in msg


@pytest.mark.parametrize("override, words", [
    ("model.backbone.depth='12'", ["model.backbone.depth", "expected int", "--cfg-options"]),
    ("data.batch_size=2.5", ["data.batch_size", "expected int"]),
    ("runtime.skip_nonfinite=1", ["runtime.skip_nonfinite", "expected bool"]),
    ("model.backbone.injection_point=6", ["injection_point", "outside [0, depth=6)"]),
    ("model.backbone.injection_point=-1", ["injection_point", "outside"]),
    ("model.backbone.num_clusters=0", ["num_clusters", ">= 1"]),
    ("data.train_pipeline.crop_size=(250, 256)", ["crop_size", "multiples of 16"]),
    ("data.train_pipeline.crop_size=(0, 0)", ["crop_size", "multiples of 16"]),
    ("model.test_cfg.crop_size=(100, 100)", ["test_cfg.crop_size", "multiples of 16"]),
    ("model.backbone.type=CTSNet", ["model.backbone.type", "unknown type"]),
    ("data.type=Cityscapes", ["data.type", "Synthetic"]),
    ("data.dataset_kwargs.num_imgs=3", ["num_imgs"]),
    ("schedule.min_lr=1", ["min_lr", "above optimizer.lr"]),
])
def test_bad_values_fail_before_any_work(override: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "config/demo/segmenter_clustvit-demo_synthetic.py", [override])
    for w in words:
        assert w in str(err.value)


def test_crop_larger_than_image_is_fine() -> None:
    cfg = load_config(REPO / "config/demo/segmenter_clustvit-demo_synthetic.py",
                      ["data.train_pipeline.crop_size=(1024, 1024)"])
    rng = np.random.default_rng(0)
    img, msk = build_pipeline(cfg["data"], "train")(np.zeros((256, 256, 3), np.uint8), np.ones((256, 256), np.uint8), rng)
    assert img.shape == (1024, 1024, 3) and (msk == 255).sum() >= 1024 * 1024 - 2 * 256 * 256


def test_missing_base_and_broken_file(tmp_path: Path) -> None:
    bad = _write(tmp_path / "a.py", '_base_ = "nope.py"\n')
    with pytest.raises(ConfigError, match="_base_ file not found.*nope.py"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.py")
    broken = _write(tmp_path / "b.py", "model = dict(\n")
    with pytest.raises(ConfigError, match="b.py: cannot execute"):
        load_config(broken)


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(REPO / "config/clustvit/ade20k/segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip3.py")
    save_config(cfg, tmp_path)
    assert load_config(tmp_path / "config.py") == cfg  # the saved Python file is a complete config
    assert json.loads((tmp_path / "config.json").read_text())["model"]["backbone"]["injection_point"] == 3
    assert not list(tmp_path.glob(".*tmp"))


def test_cts_config_without_policy_weights_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no weights/policynet.safetensors here
    cfg = load_config(REPO / "config/cts/segmenter_cts-b_mask_1xb8-80k_suim-512x512.py")
    with pytest.raises(FileNotFoundError, match="policynet.safetensors: policy-net weights file not found; train one"):
        build_segmentor({**cfg["model"], "backbone": {**cfg["model"]["backbone"], "embed_dim": 16, "num_heads": 2}})
