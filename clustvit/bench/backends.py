"""``clustvit bench backends``: our CPU path against the library paths a user would pick instead, on the
same model and images.

For each config (default: Segmenter ViT-b and ClustViT-b k3/ip3 on SUIM) and each backend, a fresh
model with the same seeded random weights runs every image at batch 1; the table gives the median ms
per image over ``--repeats`` timed passes (after the warm-up passes: compilation happens there), the
gain over plain eager float32, and the share of pixels whose arg-max agrees with plain eager float32.
The backends run one after the other (each fully, then freed), not interleaved.

Backends (:data:`BACKENDS`):
  eager, eager_bf16         the plain model (``clustvit/models/`` only), float32 / autocast (``amp_dtype``);
  compile, compile_freeze   ``torch.compile`` (inductor) of the segmentor, float32; ``compile_freeze``
                            also sets ``torch._inductor.config.freezing`` (weights folded as constants);
  compile_freeze_bf16       the same under autocast;
  ort                       onnxruntime (CPU provider, all graph optimisations) on the exported graph, float32;
  ov, ov_bf16               OpenVINO on the same graph, ``INFERENCE_PRECISION_HINT`` f32 / bf16;
  ours, ours_bf16           ``clustvit.accel.accelerate(model, "cpu", dtype)``: what the inference CLIs run.
The exported graph is ``clustvit.deploy.export``'s, fixed at batch 1 and the image size of the first input
(every input must have that size). With ``--oracle-clusters`` a ClustViT graph is exported with the
cluster ids as a second input instead of the Cluster module's arg-max, so every backend merges the
same tokens; the merge itself (data-dependent lengths) stays in the graph. onnxruntime's CPU provider
offers no bf16, so it has one row. ``--work-dir`` gets ``bench_backends.json`` and the .onnx files.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustvit import loading
from clustvit.accel import accelerate
from clustvit.accel.dtype import amp_dtype
from clustvit.atomic import write_json_atomic
from clustvit.bench import common as bench
from clustvit.bench.report import text_table
from clustvit.bench.timing import autocast, summarise_runs, time_passes
from clustvit.deploy.export import ExportedSegmentor, check_export_supported
from clustvit.inference.runtime import tune_malloc

DEFAULT_CONFIGS = [
    "config/vit/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py",
    "config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py",
]
BACKENDS = ["eager", "eager_bf16", "compile", "compile_freeze", "compile_freeze_bf16", "ort", "ov", "ov_bf16",
            "ours", "ours_bf16"]
# One image -> (1, n_cls, H, W) float logits; the arguments are the image (1, 3, H, W) float 0..255, its
# mask (1, H, W) and the oracle ids (1, N) or None.
Run = Callable[[Tensor, Tensor, Tensor | None], Tensor]


@dataclass
class Backend:
    run: Run
    warmup: int = 1
    info: dict = field(default_factory=dict)


class OracleGraph(nn.Module):
    """The segmentor with the cluster ids as an input (what ``oracle=True`` feeds the backbone), for export."""

    def __init__(self, seg: nn.Module) -> None:
        super().__init__()
        self.seg = seg

    def forward(self, image: Tensor, cluster_ids: Tensor) -> Tensor:
        """(1, 3, H, W) float 0..255, (1, N) int64 -> (1, n_cls, H, W) logits."""
        feats = self.seg.backbone(self.seg.normalise(image), cluster_ids=cluster_ids)
        logits = self.seg.decode_head(feats.features)
        return F.interpolate(logits, image.shape[2:], mode="bilinear", align_corners=False)


def export_graph(seg: nn.Module, path: Path, shape: Sequence[int], with_ids: bool) -> Path:
    """Write the batch-1 ONNX graph at ``shape`` (H, W): clustvit.deploy.export's, or with cluster ids as an input."""
    check_export_supported()
    H, W = shape
    example = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0)) * 255
    if with_ids:
        module, inputs, names = OracleGraph(seg), (example, torch.zeros(1, (H // 16) * (W // 16), dtype=torch.long)), ["image", "cluster_ids"]
    else:
        module, inputs, names = ExportedSegmentor(seg), (example,), ["image"]
    with torch.no_grad():
        program = torch.onnx.export(module.eval(), inputs, dynamo=True, input_names=names)
    program.save(str(path))
    return path


CPU = torch.device("cpu")  # a comparison of CPU backends


def torch_backend(seg: nn.Module, oracle: bool, bf16: bool) -> Run:
    @torch.no_grad()
    def run(image: Tensor, mask: Tensor, _ids: Tensor | None) -> Tensor:
        with autocast(CPU, bf16):
            return bench.infer(seg, image, mask, oracle).float()

    return run


def compiled_backend(seg: nn.Module, oracle: bool, bf16: bool, freezing: bool) -> Run:
    import torch._dynamo  # torch internals, loaded only for the compiled backends
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()  # no graph of an earlier backend's model is reused
    for knob in ("recompile_limit", "cache_size_limit"):  # ClustViT's lengths vary per image: keep compiling
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)
    seg.compile()  # the segmentor's forward; the sliding-window stitching around it stays eager
    inner = torch_backend(seg, oracle, bf16)

    def run(image: Tensor, mask: Tensor, ids: Tensor | None) -> Tensor:
        with inductor_config.patch(freezing=freezing):  # read when a graph is compiled (first call, recompiles)
            return inner(image, mask, ids)

    return run


def ort_backend(path: Path, threads: int) -> tuple[Run, dict]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(image: Tensor, _mask: Tensor, ids: Tensor | None) -> Tensor:
        feed = {"image": image.numpy()}
        if "cluster_ids" in names:
            feed["cluster_ids"] = ids.numpy()
        return torch.from_numpy(sess.run(None, feed)[0])

    return run, {"onnxruntime": ort.__version__}


def ov_backend(path: Path, threads: int, bf16: bool) -> tuple[Run, dict]:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "INFERENCE_NUM_THREADS": threads,
              "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(str(path), "CPU", config)
    names = [i.get_any_name() for i in compiled.inputs]
    request = compiled.create_infer_request()
    # What the plugin actually runs: it falls back to f32 on CPUs without bf16 support.
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(image: Tensor, _mask: Tensor, ids: Tensor | None) -> Tensor:
        feed = {"image": image.numpy()}
        if "cluster_ids" in names:
            feed["cluster_ids"] = ids.numpy()
        request.infer(feed)
        return torch.from_numpy(np.array(request.get_output_tensor(0).data))

    return run, {"openvino": ov.__version__, "inference_precision": precision}


def time_backend(backend: Backend, inputs: Sequence[tuple[Tensor, Tensor, Tensor | None]], repeats: int) -> list[float]:
    """Seconds of each timed pass over all inputs, after the backend's warm-up passes."""
    def one_pass() -> None:
        for image, mask, ids in inputs:
            backend.run(image, mask, ids)

    return time_passes(one_pass, repeats, backend.warmup, CPU)


def labels(run: Run, inputs: Sequence[tuple[Tensor, Tensor, Tensor | None]]) -> Tensor:
    return torch.cat([run(image, mask, ids).argmax(1) for image, mask, ids in inputs])  # (n, H, W)


def build_backend(name: str, config: str, args: argparse.Namespace, onnx: Callable[[], Path]) -> Backend:
    """A fresh seeded model set up as backend ``name``; ``onnx()`` gives the exported graph (made once)."""
    bf16 = name.endswith("_bf16")
    if name in ("ort", "ov", "ov_bf16"):
        path = onnx()
        run, info = ort_backend(path, torch.get_num_threads()) if name == "ort" else \
            ov_backend(path, torch.get_num_threads(), bf16)
        return Backend(run, 1, {"graph": str(path), **info})
    seg, _ = loading.load_model(config, None, args.cfg_options, "cpu")
    if name.startswith("ours"):
        accelerate(seg, CPU, amp_dtype(CPU) if bf16 else None)  # the dtype autocast(CPU, True) runs
        return Backend(torch_backend(seg, args.oracle_clusters, bf16))
    if name.startswith("compile"):
        # Two warm-up passes: the first compiles, the second the dynamic-shape graphs of new lengths.
        return Backend(compiled_backend(seg, args.oracle_clusters, bf16, freezing="freeze" in name), 2)
    return Backend(torch_backend(seg, args.oracle_clusters, bf16))


def bench_config(config: str, backends: Sequence[str], args: argparse.Namespace, out_dir: Path) -> dict:
    """Every backend on one config's inputs; returns {"rows": {backend: row}, ...}."""
    seg, cfg = loading.load_model(config, None, args.cfg_options, "cpu")
    samples = bench.inputs_from_args(cfg, args.shape, args.data_root, args.split, args.limit)
    shape = tuple(samples[0].image.shape[1:])
    if any(tuple(s.image.shape[1:]) != shape for s in samples):
        raise ValueError(f"{config}: the inputs differ in size; the exported graph is fixed at {shape}")
    images = [(s.image[None], s.mask[None]) for s in samples]
    with_ids = args.oracle_clusters and bench.uses_clusters(seg)
    ids = [t[:1] for t in bench.oracle_ids(seg, images)] if with_ids else [None] * len(images)
    # Sliding windows stay outside the graph: one window per image keeps every backend on the same work.
    if seg.test_mode == "slide" and any(s > c for s, c in zip(shape, seg.crop_size, strict=True)):
        raise ValueError(f"{config}: {shape} inputs need several sliding windows; the exported graph runs one")
    inputs = [(image, mask, i) for (image, mask), i in zip(images, ids, strict=True)]
    reference = labels(torch_backend(seg, args.oracle_clusters, False), inputs)
    n = len(inputs)
    del seg
    graph: list[Path | Exception] = []  # the export, tried once: its file or its failure

    def onnx() -> Path:
        if not graph:
            model, _ = loading.load_model(config, None, args.cfg_options, "cpu")
            t0 = time.perf_counter()
            try:
                graph.append(export_graph(model, out_dir / f"{Path(config).stem}.onnx", shape, with_ids))
                print(f"  exported {graph[0].name} in {time.perf_counter() - t0:.0f} s", flush=True)
            except Exception as e:  # noqa: BLE001 - reported on each backend that needs the graph
                graph.append(RuntimeError(f"export failed: {type(e).__name__}: {e}".splitlines()[0]))
        if isinstance(graph[0], Exception):
            raise graph[0]
        return graph[0]

    rows = {}
    for name in backends:
        t0 = time.perf_counter()
        try:
            backend = build_backend(name, config, args, onnx)
            seconds = time_backend(backend, inputs, args.repeats)
            agree = 100.0 * float((labels(backend.run, inputs) == reference).float().mean())
        except Exception as e:  # noqa: BLE001 - a backend that cannot run this graph is a result, not a crash
            rows[name] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
            print(f"  {name:<20} failed: {rows[name]['error']}", flush=True)
            continue
        finally:
            backend = None  # free the model and session before the next backend
            gc.collect()
        stats = summarise_runs(seconds, n)
        rows[name] = {**stats, "agreement_pct": agree, "wall_s": time.perf_counter() - t0}
        if name in ("ort", "ov", "ov_bf16"):
            rows[name]["fixed_graph"] = f"1x3x{shape[0]}x{shape[1]}"
        print(f"  {name:<20} {stats['ms_per_img_median']:9.1f} ms/img  agree {agree:6.2f}%  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    eager = rows.get("eager", {}).get("ms_per_img_median")
    for row in rows.values():
        if eager and "ms_per_img_median" in row:
            row["gain_vs_eager"] = eager / row["ms_per_img_median"]
    return {"name": Path(config).stem, "config": config, "num_images": n, "shape": list(shape),
            "oracle_ids_in_graph": with_ids, "rows": rows}


def format_table(results: Sequence[dict]) -> str:
    """One line per (model, backend): median ms per image, gain over eager float32, agreement (or the error)."""
    rows: list[list[str]] = []
    for res in results:
        for name, row in res["rows"].items():
            if "error" in row:
                rows.append([res["name"], name, row["error"][:60]])
                continue
            gain = f"{row['gain_vs_eager']:.2f}x" if "gain_vs_eager" in row else "-"
            rows.append([res["name"], name, f"{row['ms_per_img_median']:.1f}", gain, f"{row['agreement_pct']:.2f}"])
    return text_table(["model", "backend", "ms/img", "vs eager", "agree %"], rows, align="llrrr")


def run(args: argparse.Namespace) -> dict:
    """Every backend on every config; print the table; ``--work-dir``: ``bench_backends.json``, the graphs."""
    if args.device != "cpu":
        raise ValueError(f"--device {args.device}: this comparison is of CPU backends; pass --device cpu")
    tune_malloc()  # as every inference CLI: docs/BENCHMARKS.md
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        out_dir = Path(args.work_dir) if args.work_dir else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for config in args.config or DEFAULT_CONFIGS:
            print(f"{Path(config).stem}:", flush=True)
            results.append(bench_config(config, args.backends, args, out_dir))
    print(f"{results[0]['num_images']} images at batch 1, {torch.get_num_threads()} threads, {args.repeats} repeats, "
          f"oracle clusters {args.oracle_clusters}, torch {torch.__version__}; {bench.cpu_name()}")
    print(format_table(results))
    result = {"models": results, **bench.run_info(args)}
    if args.work_dir:
        write_json_atomic(Path(args.work_dir) / "bench_backends.json", result)
    return result

