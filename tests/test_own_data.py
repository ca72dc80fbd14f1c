"""docs/OWN_DATA.md, run: every ```bash command of the page, its placeholders filled in, on small labelled
folders made here in each layout (flat, split_dirs, VOC colour masks): check, train, resume, test, predict.
And ``--from``: a 6-class demo checkpoint fine-tuned into an 8-class SUIM-style folder re-initialises the
class-specific head keys, names them in one line, and loads every other key as it was saved.

The models are shrunk by ``--cfg-options`` (width 32, depth 2, 64x64 images, 2 iterations): one run is ~1 s.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from folder_data import make_folder

from clustvit import cli
from clustvit.configs import load_config
from clustvit.data.palettes import SUIM_CLASSES
from clustvit.engine.checkpoint import FORMAT
from clustvit.models.build import build_segmentor

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "OWN_DATA.md"
ITERS = 2
SHRINK = [
    "model.backbone.embed_dim=32", "model.backbone.depth=2", "model.backbone.num_heads=2",
    "model.backbone.out_indices=[1]", "model.backbone.injection_point=1", "model.backbone.cluster_mlp_size=32",
    "model.backbone.img_size=[64,64]", "model.decode_head.embed_dim=32", "model.decode_head.num_heads=2",
    "model.decode_head.depth=1", "model.pretrained=None", "model.test_cfg.crop_size=[64,64]",
    "model.test_cfg.stride=[64,64]", f"schedule.max_iters={ITERS}", "schedule.log_interval=1",
    "data.batch_size=2", "data.num_workers=0", "data.train_pipeline.scale=[64,64]",
    "data.train_pipeline.crop_size=[64,64]", "data.test_pipeline.scale=[64,64]",
]
# The page's placeholders: DIR, W, CHECKPOINT, IMAGES, PRED (and N in iter_N.pth).
PLACEHOLDER = re.compile(r"(?<![A-Za-z0-9_-])(DIR|W|CHECKPOINT|IMAGES|PRED)(?![A-Za-z0-9_])")
LAYOUTS = {"flat": ({}, "images"), "split_dirs": ({}, "train/images"), "voc": ({"colour": True}, "JPEGImages")}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run fastest on one thread


def page_commands() -> list[list[str]]:
    """Every command of the page's ```bash blocks, in page order (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#", line)[0].strip()
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def fill(words: list[str], places: dict[str, Path]) -> list[str]:
    """The command with its placeholders replaced; a `--data` training run shrunk to a few seconds."""
    out = [PLACEHOLDER.sub(lambda m: str(places[m[1]]), w.replace("iter_N", f"iter_{ITERS}")) for w in words]
    if out[:2] == ["clustvit", "train"]:
        out += ["--no-tensorboard"]
        if "--data" in out:
            out += ["--cfg-options", *SHRINK]
    return out


def clustvit(words: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``clustvit ARGS`` in this process: (exit status, stdout, stderr)."""
    assert words[0] == "clustvit", words
    capsys.readouterr()
    try:
        rc = cli.main(words[1:])
    except SystemExit as e:  # --help
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def has_data_plan() -> bool:
    parser = cli.command_parser("data")
    return any("plan" in getattr(a, "choices", None) or () for a in parser._actions
               if a.__class__.__name__ == "_SubParsersAction")


def test_the_page_shows_each_step() -> None:
    commands = [" ".join(c[:3]) for c in page_commands()]
    for step in ("clustvit data check", "clustvit data plan", "clustvit train --data", "clustvit train W/config.py",
                 "clustvit test W/config.py", "clustvit predict W/config.py"):
        assert step in commands, f"docs/OWN_DATA.md has no `{step} ...` command"
    assert any("--from" in c for c in page_commands())


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_page_runs_on_each_layout(tmp_path: Path, layout: str, capsys: pytest.CaptureFixture) -> None:
    kwargs, images = LAYOUTS[layout]
    data = make_folder(tmp_path / "data", layout, **kwargs)
    places = {"DIR": data, "W": tmp_path / "work", "IMAGES": data / images, "PRED": tmp_path / "pred"}
    plan = has_data_plan()
    for words in page_commands():
        if "--from" in words or (words[1:3] == ["data", "plan"] and not plan):
            continue  # --from: the next test; data plan: not in this checkout yet
        command = fill(words, places)
        rc, _, err = clustvit(command, capsys)
        assert rc == 0, f"{shlex.join(command)}: exit {rc}\n{err}"
    work = places["W"]
    cfg = load_config(work / "config.py")
    assert cfg["data"]["type"] == "Folder" and cfg["data"]["root"] == str(data.resolve())
    assert cfg["model"]["num_classes"] == 3 and cfg["data"]["dataset_kwargs"]["classes"] == ["background", "hull",
                                                                                            "rust"]
    assert (work / f"iter_{ITERS}.pth").is_file() and (work / "results.json").is_file()
    assert len(list(places["PRED"].glob("*.png"))) == len(list(places["IMAGES"].iterdir()))


def _save_demo_checkpoint(path: Path, extra: list[str] = ()) -> dict[str, torch.Tensor]:
    """A 6-class demo ClustViT at the shrunk size, saved in our checkpoint format."""
    cfg = load_config("segmenter_clustvit-demo_synthetic", [*SHRINK, *extra])
    torch.manual_seed(1)
    sd = build_segmentor(cfg["model"]).state_dict()
    torch.save({"format": FORMAT, "model": sd, "config": cfg}, path)
    return sd


def test_from_a_6_class_checkpoint_into_8_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "suim", "split_dirs", classes=SUIM_CLASSES)
    ckpt = tmp_path / "demo.pth"
    saved = _save_demo_checkpoint(ckpt)
    work = tmp_path / "work"
    [words] = [c for c in page_commands() if "--from" in c]
    command = fill(words, {"DIR": data, "W": work, "CHECKPOINT": ckpt})
    command += ["optimizer.lr=0.0", "schedule.min_lr=0.0"]  # no step moves a weight: the saved ones are the loaded
    rc, _, err = clustvit(command, capsys)
    assert rc == 0, err
    lines = [line for line in err.splitlines() if "--from" in line]
    class_keys = ["decode_head.cls_emb", "decode_head.mask_norm.bias", "decode_head.mask_norm.weight"]
    assert len(lines) == 1 and lines[0].startswith(
        f"clustvit: --from {ckpt}: re-initialised 3 class-specific keys for 8 classes (was 6): "
        f"{', '.join(class_keys)}; loaded the other {len(saved) - 3} keys"), err
    trained = torch.load(work / f"iter_{ITERS}.pth", map_location="cpu", weights_only=True)["model"]
    assert trained.keys() == saved.keys()
    assert [k for k in saved if k not in class_keys and not torch.equal(trained[k], saved[k])] == []
    assert trained["decode_head.cls_emb"].shape[1] == 8 and saved["decode_head.cls_emb"].shape[1] == 6
    assert load_config(work / "config.py")["runtime"]["load_from"] == str(ckpt)


def test_from_another_width_and_an_unknown_model_are_one_line_errors(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", "flat", n=4)
    wide = tmp_path / "wide.pth"
    _save_demo_checkpoint(wide, ["model.backbone.embed_dim=64", "model.decode_head.embed_dim=64"])
    base = ["clustvit", "train", "--data", str(data), "--work-dir", str(tmp_path / "w"), "--no-tensorboard"]
    rc, _, err = clustvit([*base, "--model", "clustvit-b_k3_ip3", "--from", str(wide), "--cfg-options", *SHRINK],
                          capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert str(wide) in err and "shape mismatch" in err and "backbone." in err
    rc, _, err = clustvit([*base, "--model", "clustvit-x_k3"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "--model clustvit-x_k3: unknown" in err and "clustvit-b_k3_ip3" in err
