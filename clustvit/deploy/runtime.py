"""Run an exported graph (``clustvit export``) without PyTorch's model: onnxruntime or OpenVINO.

    predictor = ExportedPredictor("model.onnx", backend="openvino")   # bf16=True: OpenVINO's bfloat16
    predictor = ExportedPredictor("model.xml")                        # an OpenVINO IR (float32 or int8)
    labels = predictor.predict(rgb)                                   # (H, W) int64 at the input's size

The graph runs at the fixed size it was exported at: every image is resized to it (bilinear, as the
test pipeline resizes) and the logits are upsampled back to the image for the arg-max
(:func:`clustvit.inference.predictor.upsampled_argmax`, so memory does not grow with classes x pixels). Where a
config resizes to that same size (``keep_ratio=False``), the labels are those of
:class:`clustvit.inference.predictor.Predictor` up to float rounding. Class names and palette come from the file
(written by the export); a graph without them gets generated ones. An OpenVINO IR (``.xml`` with its
``.bin``, ``clustvit export --out model.xml [--int8]``) runs on OpenVINO only.

Run OpenVINO in a process of its own (a deployment process): in a process that had it loaded, later
PyTorch training with DataLoader workers was seen to crash (segmentation fault, OpenVINO 2026.4).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from clustvit.deploy.export import METADATA_KEYS, to_input
from clustvit.inference.predictor import as_rgb, upsampled_argmax
from clustvit.viz.draw import distinct_colours

BACKENDS = ("onnxruntime", "openvino")


def default_backend() -> str:
    """OpenVINO where it is installed (the faster CPU runtime on the graph), else onnxruntime."""
    import importlib.util

    return "openvino" if importlib.util.find_spec("openvino") is not None else "onnxruntime"


def _onnxruntime(path: Path, bf16: bool, threads: int | None) -> tuple[Callable, dict[str, str], list[int]]:
    """(run, metadata, logits shape) of an onnxruntime CPU session."""
    if bf16:
        raise ValueError("bf16: onnxruntime's CPU provider has no bfloat16 kernels, expected backend 'openvino'")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {name: x})[0]), dict(sess.get_modelmeta().custom_metadata_map), \
        list(sess.get_outputs()[0].shape)


def _openvino(path: Path, bf16: bool, threads: int | None) -> tuple[Callable, dict[str, str], list[int]]:
    """(run, metadata, logits shape) of an OpenVINO CPU model; ONNX metadata sits under rt_info "framework"."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    meta = {k: model.get_rt_info(["framework", k]).astype(str) for k in METADATA_KEYS
            if model.has_rt_info(["framework", k])}
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", config)
    shape = [int(d) for d in model.output(0).get_partial_shape().to_shape()]
    return (lambda x: compiled(x)[0]), meta, shape


class ExportedPredictor:
    """An exported segmentor graph on a CPU runtime. Images are (H, W, 3) uint8 RGB (or any
    :func:`clustvit.inference.predictor.as_rgb` input); ``classes``, ``palette`` and ``input_size`` (H, W) describe it."""

    def __init__(self, path: str | Path, backend: str | None = None, bf16: bool = False,
                 threads: int | None = None) -> None:
        """``path``: a .onnx file or an OpenVINO IR .xml (its .bin beside it); ``backend``: "onnxruntime" or
        "openvino" (default: :func:`default_backend`; an IR: "openvino"); ``bf16``: OpenVINO's bfloat16 inference
        precision (on CPUs that have it; with an int8 IR, for the ops left in float); ``threads``: intra-op
        threads (default: the runtime's)."""
        path = Path(path)
        ir = path.suffix == ".xml"
        backend = backend or ("openvino" if ir else default_backend())
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if ir and backend != "openvino":
            raise ValueError(f"{path}: an OpenVINO IR runs on backend 'openvino', not {backend}")
        if not path.is_file():
            kind = "OpenVINO IR" if ir else "ONNX"
            raise FileNotFoundError(f"{path}: no such {kind} file (write one with clustvit export)")
        if ir and not path.with_suffix(".bin").is_file():
            raise FileNotFoundError(f"{path.with_suffix('.bin')}: the IR's weights are missing (expected beside {path.name})")
        try:
            self._run, meta, shape = (_onnxruntime if backend == "onnxruntime" else _openvino)(path, bf16, threads)
        except ImportError:
            raise ValueError(f"backend {backend}: not installed (pip install {backend})") from None
        except Exception as e:  # noqa: BLE001 - the runtimes raise their own types for unreadable files
            if isinstance(e, ValueError):
                raise
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{path}: {backend} cannot load it as a model ({first})") from None
        if len(shape) != 4 or shape[0] != 1:
            raise ValueError(f"{path}: first output has shape {shape}, expected (1, n_cls, H, W) logits")
        self.path, self.backend, self.bf16 = path, backend, bf16
        n = shape[1]
        self.input_size = (shape[2], shape[3])
        classes, palette = json.loads(meta.get("clustvit.classes", "[]")), json.loads(meta.get("clustvit.palette", "[]"))
        self.classes = tuple(classes) if len(classes) == n else tuple(f"class{i}" for i in range(n))
        self.palette = [tuple(c) for c in palette] if len(palette) == n else distinct_colours(n)

    def test_logits(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) image -> (n_cls, h, w) float32 logits at the graph's input size."""
        return torch.from_numpy(np.asarray(self._run(to_input(as_rgb(rgb), self.input_size)), np.float32)[0])

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) image -> (H, W) int64 class indices at the input's resolution."""
        rgb = as_rgb(rgb)
        return upsampled_argmax(self.test_logits(rgb), rgb.shape[:2]).numpy()

