"""ONNX export with the data-dependent token merging in the graph, checked with onnxruntime on real images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clustvit import cli
from clustvit.data.base import read_image
from clustvit.deploy.export import ExportedSegmentor, to_input, verify
from clustvit.deploy.runtime import ExportedPredictor
from clustvit.inference.api import build_model, dataset_meta, resolve_config
from clustvit.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
SUIM = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples" / "SUIM" / "TEST" / "images"
DEMO = REPO / "config" / "demo" / "segmenter_clustvit-demo_synthetic.py"
TINY = [
    "model.backbone.embed_dim=32", "model.backbone.depth=3", "model.backbone.num_heads=2",
    "model.backbone.injection_point=1", "model.backbone.out_indices=[2]", "model.backbone.cluster_mlp_size=32",
    "model.decode_head.embed_dim=32", "model.decode_head.num_heads=2",
]
SHAPE = (96, 128)  # 6 x 8 tokens
EXPORTS = hasattr(torch.compiler, "is_exporting")  # torch >= 2.7


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny demo ClustViT saved as one of our checkpoints, exported once by the CLI."""
    if not EXPORTS:
        pytest.skip(f"ONNX export needs torch >= 2.7, this is {torch.__version__}")
    if not SUIM.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared samples missing: {SUIM}")
        pytest.skip(f"shared samples missing: {SUIM}")
    tmp = tmp_path_factory.mktemp("onnx")
    cfg = resolve_config(DEMO, TINY)
    seg = build_model(cfg, None)
    seg.backbone.cluster.fc2.weight.data *= 30  # decisive cluster arg-maxes: images merge, and differently
    ckpt = tmp / "tiny.pth"
    torch.save({"format": "clustvit-v1", "model": seg.state_dict(), "config": cfg, "iter": 1}, ckpt)
    out = tmp / "tiny.onnx"
    argv = ["export", str(DEMO), str(ckpt), "--out", str(out), "--shape", *map(str, SHAPE), "--verify", str(SUIM),
            "--cfg-options", *TINY]
    assert cli.main(argv) == 0
    return out, ckpt


def test_onnx_matches_pytorch_on_suim_with_varying_token_counts(exported: tuple[Path, Path]) -> None:
    onnx_path, ckpt = exported
    seg = build_model(resolve_config(DEMO, TINY), ckpt)
    images = [read_image(p) for p in sorted(SUIM.iterdir())]
    images.append(np.full((60, 80, 3), 90, dtype=np.uint8))  # uniform: one cluster id, nothing merged
    results = verify(onnx_path, seg, images, SHAPE)
    for r in results:
        assert r["max_abs_diff"] <= 1e-3 and r["agreement"] == 1.0 and r["ids_agreement"] == 1.0, r
        assert r["tokens_onnx"] == r["tokens_torch"]
    tokens = [r["tokens_onnx"] for r in results]
    assert tokens[-1] == 1 + 6 * 8  # the unreduced image runs on every token
    assert len(set(tokens[:-1])) >= 2 and max(tokens[:-1]) < 1 + 6 * 8  # merging happened, data-dependently


def test_onnx_graph_has_one_image_input_and_the_merge_statistics(exported: tuple[Path, Path]) -> None:
    import onnx

    model = onnx.load(str(exported[0]))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits", "tokens", "cluster_ids"]
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 6, *SHAPE]
    ops = {n.op_type for n in model.graph.node}
    assert "ArgMax" in ops and "NonZero" not in ops  # the cluster arg-max; token selection by scatter, not masks
    # No scatter-add: onnxruntime's multi-threaded ScatterND(reduction=add) loses updates on repeated indices
    # (seen at base size: logits off by up to 0.17, differently from run to run). Cluster sums are a matmul.
    reductions = [a.s for n in model.graph.node if n.op_type == "ScatterND" for a in n.attribute if a.name == "reduction"]
    assert all(r in (b"", b"none") for r in reductions), reductions


def test_export_wrapper_matches_predict_logits(exported: tuple[Path, Path]) -> None:
    seg = build_model(resolve_config(DEMO, TINY), exported[1])
    x = torch.from_numpy(to_input(read_image(sorted(SUIM.iterdir())[0]), SHAPE))
    with torch.no_grad():
        logits, tokens, ids = ExportedSegmentor(seg)(x)
        torch.testing.assert_close(logits, seg.predict_logits(x))
    assert ids.shape == (1, 48) and tokens.shape == (1,)




def _reference_predictor(ckpt: Path):
    """PyTorch's Predictor on the exported checkpoint, resizing to the graph's fixed size."""
    cfg = resolve_config(DEMO, TINY)
    classes, palette = dataset_meta(cfg["data"], 6)
    return Predictor(build_model(cfg, ckpt), (SHAPE[1], SHAPE[0]), False, classes, palette, accel=False)


def test_exported_graph_runs_without_the_model(exported: tuple[Path, Path]) -> None:
    """clustvit.deploy.runtime (onnxruntime here; OpenVINO runs in its own process below): the config's classes and
    palette come from the file, and the labels at each image's own size are PyTorch's."""
    onnx_path, ckpt = exported
    reference = _reference_predictor(ckpt)
    deployed = ExportedPredictor(onnx_path, "onnxruntime", threads=1)
    assert deployed.input_size == SHAPE and deployed.classes == reference.classes == (
        "sky", "grass", "water", "rock", "weed", "robot")
    assert deployed.palette == reference.palette
    for image in sorted(SUIM.iterdir()):
        rgb = read_image(image)
        labels = deployed.predict(rgb)
        assert labels.shape == rgb.shape[:2] == (480, 640) and labels.dtype == np.int64
        assert (labels == reference.predict(rgb)).mean() > 0.999  # float rounding at near-ties only


def test_predict_cli_on_an_exported_graph_with_openvino(exported: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """`clustvit predict MODEL.onnx IMAGES --out DIR` on OpenVINO, fp32 and bf16, each in its own
    process (OpenVINO loaded into a process that later trains with DataLoader workers can crash it): the
    label PNGs are PyTorch's labels. Wrong runtimes and arguments are one line each."""
    onnx_path, ckpt = exported
    reference = _reference_predictor(ckpt)
    expected = {image.stem: reference.predict(read_image(image)) for image in sorted(SUIM.iterdir())}
    for amp, line in ((False, "(openvino)"), (True, "(openvino, bf16)")):
        out = tmp_path / f"amp{int(amp)}"
        run = subprocess.run([sys.executable, "-m", "clustvit", "predict", str(onnx_path), str(SUIM), "--out", str(out),
                              "--backend", "openvino", "--overlay", *(["--amp"] if amp else [])],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip() == f"wrote 5 label PNG(s) and overlays to {out} {line}"
        agree = np.mean([(np.asarray(Image.open(out / f"{stem}.png")) == labels).mean()
                         for stem, labels in expected.items()])
        assert agree > (0.8 if amp else 0.999), (amp, agree)  # bf16 (where the CPU has it) moves near-ties
        assert len(list(out.glob("*_overlay.png"))) == 5
    assert cli.main(["predict", str(onnx_path), str(SUIM), "--out", str(tmp_path / "o2"), "--backend",
                     "onnxruntime", "--amp"]) == 2
    assert capsys.readouterr().err.strip() == ("error: bf16: onnxruntime's CPU provider has no bfloat16 kernels, "
                                               "expected backend 'openvino'")
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    assert cli.main(["predict", str(tmp_path / "bad.onnx"), str(SUIM), "--out", str(tmp_path / "o3"),
                     "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'bad.onnx'}: onnxruntime cannot load it as a model (") and "\n" not in err
    assert cli.main(["predict", str(tmp_path / "missing.onnx"), str(SUIM), "--out", str(tmp_path / "o4")]) == 2
    assert "missing.onnx: no such ONNX file" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
