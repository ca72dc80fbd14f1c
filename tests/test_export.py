"""ONNX export with the data-dependent token merging in the graph, checked with onnxruntime on real images."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dynseg.api import build_model, resolve_config
from dynseg.export import ExportedSegmentor, to_input, verify
from dynseg.predict import read_rgb

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
    torch.save({"format": "dynseg-v1", "model": seg.state_dict(), "config": cfg, "iter": 1}, ckpt)
    spec = importlib.util.spec_from_file_location("export_onnx", REPO / "tools" / "export_onnx.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp / "tiny.onnx"
    argv = [str(DEMO), str(ckpt), "--out", str(out), "--shape", *map(str, SHAPE), "--verify", str(SUIM),
            "--cfg-options", *TINY]
    assert cli.main(argv) == 0
    return out, ckpt


def test_onnx_matches_pytorch_on_suim_with_varying_token_counts(exported: tuple[Path, Path]) -> None:
    onnx_path, ckpt = exported
    seg = build_model(resolve_config(DEMO, TINY), ckpt)
    images = [read_rgb(p) for p in sorted(SUIM.iterdir())]
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
    x = torch.from_numpy(to_input(read_rgb(sorted(SUIM.iterdir())[0]), SHAPE))
    with torch.no_grad():
        logits, tokens, ids = ExportedSegmentor(seg)(x)
        torch.testing.assert_close(logits, seg.predict_logits(x))
    assert ids.shape == (1, 48) and tokens.shape == (1,)

