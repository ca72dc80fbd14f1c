"""OpenVINO IR export, float32 or int8 (NNCF post-training quantisation), with ClustViT's merge path in float.

    write_ir(onnx_path, "model.xml", meta)                                   # float32 IR
    quantize_ir(onnx_path, "model.xml", calibration_inputs(files, shape), meta)  # int8 IR

The IR is converted from :func:`clustvit.deploy.export.export_onnx`'s graph (same inputs, outputs and
data-dependent merge) and carries the same metadata (class names, palette, source) in its ``rt_info``
under ``framework``, where OpenVINO also puts an ONNX file's ``metadata_props``: one reader
(:mod:`clustvit.deploy.runtime`) serves both formats.

What stays in float (the ignored scope). Quantising ClustViT as a whole breaks it: the Cluster module's
arg-max flips on small logit errors and every flip changes which tokens merge; the one-hot cluster means,
the index bookkeeping and the regeneration gather are exact operations that int8 can only damage, and an
image that merges nothing feeds the Regenerator zero rows, whose statistics are NaN. The rule, applied to
the ONNX graph's own record of the PyTorch module each node came from (the exporter's
``pkg.torch.onnx.name_scopes`` node metadata): a node stays float when the innermost module it belongs
to, relative to the segmentor, is the backbone itself (not one of its sub-modules), or is the backbone's
``cluster`` (the Cluster module) or ``regenerator`` or inside them (:data:`FLOAT_SCOPES`). ``backbone`` itself
holds only what the backbone's forward computes outside its sub-modules: the position embedding, the
cluster arg-max, ``plan_merge``'s indices, the cluster-mean MatMul, the merge and regeneration gathers and
scatters. The transformer blocks (before and after the merge) and the decode head are quantised. OpenVINO
names each converted op after its ONNX node (``NODE`` or ``NODE/...`` for an op split in two), which
maps the rule onto the IR.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from clustvit.data.base import read_image
from clustvit.deploy.export import to_input

# Module paths, relative to the segmentor, whose nodes stay float (see the module docstring).
FLOAT_SCOPES: tuple[str, ...] = ("backbone", "backbone.cluster.*", "backbone.regenerator.*")
# The exporter's per-node record of the module stack it was traced in: ['', 'seg', 'seg.backbone', ..., op].
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
WRAPPER_PREFIX = "seg"  # clustvit.deploy.export.ExportedSegmentor holds the segmentor as ``self.seg``
DEFAULT_CALIB_COUNT = 128


def module_path(scopes: Sequence[str]) -> str:
    """The innermost module of a node's name scopes, relative to the segmentor ('' for the wrapper's own ops).

    ``scopes`` is the exporter's list: module paths outermost first, then the op's own name.
    """
    path = scopes[-2] if len(scopes) >= 2 else ""
    if path == WRAPPER_PREFIX:
        return ""
    return path[len(WRAPPER_PREFIX) + 1:] if path.startswith(WRAPPER_PREFIX + ".") else path


def in_scopes(path: str, scopes: Iterable[str]) -> bool:
    """Whether module ``path`` matches one of ``scopes``: ``NAME`` matches that module alone (not its children),
    ``NAME.*`` that module and everything inside it (``backbone.cluster.fc1`` matches ``backbone.cluster.*``)."""
    for s in scopes:
        if s.endswith(".*"):
            if path == s[:-2] or path.startswith(s[:-1]):
                return True
        elif path == s:
            return True
    return False


def float_node_names(onnx_model: object, scopes: Sequence[str] = FLOAT_SCOPES) -> list[str]:
    """Names of the ONNX nodes that the rule keeps in float.

    Raises:
        ValueError: the graph has no name-scope metadata (not written by ``torch.onnx.export(dynamo=True)``).
    """
    names, seen_scopes = [], False
    for node in onnx_model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if SCOPES_KEY not in meta:
            continue
        seen_scopes = True
        if in_scopes(module_path(ast.literal_eval(meta[SCOPES_KEY])), scopes):
            names.append(node.name)
    if not seen_scopes and len(onnx_model.graph.node):
        raise ValueError(f"the ONNX graph has no {SCOPES_KEY} node metadata: expected clustvit.deploy.export's "
                         "graph (torch.onnx.export with dynamo=True), to find the merge path")
    return names


def ir_names(ov_names: Iterable[str], onnx_names: Iterable[str]) -> list[str]:
    """The IR ops converted from ``onnx_names``: named like the node, or ``NODE/...`` (a node split in two)."""
    wanted = set(onnx_names)
    return sorted(n for n in ov_names if n in wanted or n.split("/", 1)[0] in wanted)


def calibration_inputs(files: Sequence[Path], shape: Sequence[int], count: int = DEFAULT_CALIB_COUNT) -> list[np.ndarray]:
    """Up to ``count`` of ``files`` (evenly spread) as graph inputs: (1, 3, H, W) float32 0..255 at ``shape``,
    resized as the runtime resizes (:func:`clustvit.deploy.export.to_input`).

    Raises:
        ValueError: no files, or ``count`` < 1; an unreadable image (one line naming it).
    """
    if count < 1:
        raise ValueError(f"--calib-count {count}: expected at least 1 image")
    if not files:
        raise ValueError("--calib: no calibration images, expected a folder of your own images")
    pick = np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int))
    return [to_input(read_image(files[i]), shape) for i in pick]


def require(module: str, what: str) -> object:
    """Import an optional dependency or raise one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{what} needs {module}, which is not installed (pip install {module}, or "
                         "pip install 'clustvit[bench]')") from None


def set_metadata(ov_model: object, meta: Mapping[str, str]) -> None:
    """Store ``meta`` in the model's rt_info under ``framework`` (where an ONNX file's metadata_props appear)."""
    for key, value in meta.items():
        ov_model.set_rt_info(str(value), ["framework", key])


def save_ir(ov_model: object, path: str | os.PathLike) -> Path:
    """Write ``path`` (.xml) and its .bin beside it, each by rename from a temporary folder next to them.

    Weights are kept as stored (no float16 compression): the float ops of the merge path stay float32.
    """
    import openvino as ov

    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"--out {path}: an OpenVINO IR is written as a .xml file (its weights as .bin beside it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        ov.save_model(ov_model, str(tmp / path.name), compress_to_fp16=False)
        os.replace(tmp / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(tmp / path.name, path)  # the .xml last: a reader never finds it without its weights
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_ir(onnx_path: str | os.PathLike, out: str | os.PathLike, meta: Mapping[str, str]) -> Path:
    """Convert an exported ONNX graph to a float32 OpenVINO IR at ``out`` (.xml) with ``meta`` in its rt_info."""
    ov = require("openvino", "OpenVINO IR export (--out .xml)")
    model = ov.Core().read_model(str(onnx_path))
    set_metadata(model, meta)
    return save_ir(model, out)


def quantize_ir(onnx_path: str | os.PathLike, out: str | os.PathLike, calib: Sequence[np.ndarray],
                meta: Mapping[str, str], scopes: Sequence[str] = FLOAT_SCOPES) -> tuple[Path, list[str]]:
    """Quantise an exported ONNX graph to an int8 OpenVINO IR with NNCF, the ``scopes`` rule's ops in float.

    Args:
        calib: graph inputs from :func:`calibration_inputs` (all of them are used).
        scopes: module paths kept float (:data:`FLOAT_SCOPES`; other values are for measuring the rule).

    Returns:
        The written .xml path and the names of the IR ops kept in float.

    Raises:
        ValueError: nncf or openvino not installed, no calibration inputs (one line each).
    """
    if not calib:
        raise ValueError("--calib: no calibration images, expected a folder of your own images")
    ov = require("openvino", "--int8")
    nncf = require("nncf", "--int8")
    import logging

    import onnx

    nncf.set_log_level(logging.WARNING)  # its INFO lines list hundreds of ops per run; warnings still show
    model = ov.Core().read_model(str(onnx_path))
    keep = ir_names((op.get_friendly_name() for op in model.get_ordered_ops()),
                    float_node_names(onnx.load(str(onnx_path), load_external_data=False), scopes))
    # validate=False: a rule's op that NNCF would not quantise anyway (a Gather, a ScatterND) is no error.
    ignored = nncf.IgnoredScope(names=keep, validate=False)
    quantized = nncf.quantize(model, nncf.Dataset(list(calib)), subset_size=len(calib),
                              model_type=nncf.ModelType.TRANSFORMER, ignored_scope=ignored)
    set_metadata(quantized, meta)
    return save_ir(quantized, out), keep


def openvino_runner(path: str | os.PathLike, threads: int | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """An OpenVINO CPU model (float32 inference precision) as a function: input array -> every output, in order."""
    ov = require("openvino", "running an OpenVINO IR")
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    return lambda x: [np.asarray(v) for v in compiled(x).to_tuple()]
