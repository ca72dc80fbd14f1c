"""``clustvit bench device``: one prepared check of a device: correctness, inference and training speed,
and the GPU training paths. (The measurements: ``clustvit.bench.device_check``; the Markdown:
``clustvit.bench.device_report``.)

In order, each section wrapped so that a failure is recorded and the rest still runs:
  1. every parity fixture (``clustvit.parity``, accelerated float32, TF32 off) and batch invariance
     (SUIM samples, and a tiny model on edge batches): max errors;
  2. host synchronisations per forward (CUDA: ``torch.cuda.set_sync_debug_mode``);
  3. Segmenter ViT-b against ClustViT-b k3/ip3 and k4/ip4 on the SUIM samples at 512², oracle clusters:
     img/s at each batch size, fp32 eager and ``--amp``-dtype eager (``amp_dtype``), FLOP ratio and efficiency (speed-up / FLOP ratio);
  4. a training step (bf16 autocast, SGD) of each, random weights;
  5. a few fp16 steps with GradScaler and a few DDP steps (world size 1; NCCL on CUDA, gloo on CPU);
  6. compiled inference in the ``--amp`` dtype (``clustvit.accel.accelerate(..., compile=True)``), last because compiling
     takes the longest; no new model is compiled after ``--budget-s`` seconds.
DIR/device_check.json (``device``, ``torch``, ``correctness``, ``timings``, ...) and DIR/device_check.md are
rewritten after every section. Exit code 1 if a correctness check failed, 2 if only a section crashed.

``--smoke``: the same code on tiny models (width 32, 6 blocks, 3 samples at 128²), 2 timed iterations,
batch sizes 1 and 4, and only ClustViT k4/ip4 at batch 4 compiled, with the cheap ``eager`` backend:
about 20-30 s on a CPU (tests/test_device_check.py).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from clustvit import loading, parity
from clustvit.accel.dtype import amp_dtype
from clustvit.atomic import write_json_atomic, write_text_atomic
from clustvit.bench import common as bench
from clustvit.bench import device_check as dc
from clustvit.bench.device_report import add_ratios, goals, markdown
from clustvit.bench.device_setup import describe_device, describe_torch, suim_root
from clustvit.bench.timing import autocast

# The reference material beside the checkout the package runs from (an installed package is given paths).
SHARED = Path(__file__).resolve().parents[3] / "shared"
DEFAULT_FIXTURES = parity.default_folder()
DEFAULT_SUIM = SHARED / "data" / "samples" / "SUIM"

MODELS = {  # the ViT baseline first: every ratio is against it
    "ViT-b": "config/vit/segmenter_vit-b_mask_1xb8-80k_suim-512x512.py",
    "ClustViT-b k3/ip3": "config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py",
    "ClustViT-b k4/ip4": "config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k4_ip4.py",
}
BASELINE = "ViT-b"
# Whole-image inference: at 512² it is the slide mode's single window, and it keeps a batch one batch
# (slide mode runs the windows of each image separately).
ALWAYS = ["model.test_cfg.mode=whole"]
SMOKE = ["model.backbone.img_size=(128, 128)", "model.backbone.embed_dim=32", "model.backbone.depth=6",
         "model.backbone.num_heads=2", "model.backbone.out_indices=(5,)", "model.decode_head.embed_dim=32",
         "model.decode_head.depth=1", "model.decode_head.num_heads=2", "data.test_pipeline.scale=(128, 128)"]
SMOKE_CLUST = ["model.backbone.cluster_mlp_size=32"]
# The goals' rows first, in case the time budget stops the compiled section early.
COMPILE_ORDER = ["ViT-b", "ClustViT-b k4/ip4", "ClustViT-b k3/ip3"]
SMOKE_COMPILED = "ClustViT-b k4/ip4"  # tracing costs seconds per model even with the eager backend


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """The settings left unset on the command line: the full run's, or ``--smoke``'s (in place)."""
    defaults = dict(batch_sizes=[1, 4], iters=2, warmup=1, train_batch=2, compile_backend="eager",
                    compile_models=[SMOKE_COMPILED], compile_batch_sizes=[4], limit=3) if args.smoke else \
        dict(batch_sizes=[1, 8, 32], iters=20, warmup=3, train_batch=8, compile_backend="inductor",
             compile_models=COMPILE_ORDER)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.compile_batch_sizes is None:
        args.compile_batch_sizes = args.batch_sizes
    return args


def amp_label(device: torch.device) -> str:
    """``bf16`` or ``fp16``: the ``--amp`` dtype on ``device`` as the timing rows name it."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype(device)]


class Run:
    """The report being built, its sections, and the clock."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device, self.t0 = args, device, time.perf_counter()
        self.report: dict[str, Any] = {
            "device": describe_device(device), "torch": describe_torch(), "smoke": args.smoke,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                         if not callable(v)},  # the CLI's handler is no setting
            "correctness": [], "host_syncs": {}, "flops": {},
            "timings": {"inference": [], "train_step": []}, "training_paths": {}, "errors": [],
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():7.1f} s] {message}", flush=True)

    def section(self, name: str, fn: Callable[[], None], correctness: bool = False) -> None:
        """Run one section; a crash is recorded (and, for a correctness section, fails the check)."""
        self.log(f"{name} ...")
        try:
            fn()
        except Exception as e:  # every section reports and the next one still runs
            text = f"{type(e).__name__}: {e}"
            self.log(f"{name} FAILED: {text}")
            self.report["errors"].append({"section": name, "error": text, "traceback": traceback.format_exc()})
            if correctness:
                self.check(f"{name} (section crashed)", False, None, error=text)
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.report["elapsed_s"] = self.elapsed()
        self.save()

    def attempt(self, what: str, fn: Callable[[], None]) -> None:
        """Run one part of a section; a crash is recorded and the section goes on with the next part."""
        try:
            fn()
        except Exception as e:
            self.log(f"  {what} FAILED: {type(e).__name__}: {e}")
            self.report["errors"].append({"section": what, "error": f"{type(e).__name__}: {e}",
                                          "traceback": traceback.format_exc()})
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.save()  # a run stopped by its time limit keeps every finished part

    def check(self, name: str, passed: bool, max_error: float | None, **extra: Any) -> None:
        self.report["correctness"].append({"name": name, "passed": bool(passed), "max_error": max_error, **extra})
        self.log(f"  {'ok  ' if passed else 'FAIL'} {name}" + (f" (max error {max_error:.3g})" if max_error is not None else ""))

    def save(self) -> None:
        out = self.args.out
        write_json_atomic(out / "device_check.json", self.report)
        write_text_atomic(out / "device_check.md", markdown(self.report))


def run(args: argparse.Namespace) -> int:
    """Every section in order; returns the exit status: 1 if a correctness check failed, 2 if only a
    section crashed, else 0."""
    fill_defaults(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch sees no CUDA device")
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    dc.strict_fp32()
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args, device)
    run.log(f"device {run.report['device']['name']}, torch {torch.__version__}")
    state: dict[str, Any] = {"models": {}, "samples": []}
    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        run.section("parity fixtures", lambda: check_fixtures(run), correctness=True)
        run.section("models and samples", lambda: load_models(run, state, Path(tmp)))
        run.section("batch invariance", lambda: check_batch_invariance(run, state), correctness=True)
        if device.type == "cuda":
            run.section("host syncs", lambda: check_host_syncs(run, state), correctness=True)
        else:
            run.report["host_syncs"] = {"skipped": "CUDA only (torch.cuda.set_sync_debug_mode)"}
        for mode in ("fp32 eager", f"{amp_label(device)} eager"):
            run.section(f"inference {mode}", lambda mode=mode: time_inference(run, state, mode))
        run.section("training step", lambda: time_training(run, state))
        run.section("fp16 GradScaler training", lambda: training_path(run, state, "fp16_gradscaler"), correctness=True)
        run.section("DDP training", lambda: training_path(run, state, "ddp"), correctness=True)
        if not args.skip_compile:
            compiled = f"{amp_label(device)} compiled"
            run.section(f"inference {compiled}", lambda: time_inference(run, state, compiled))
    add_ratios(run.report, BASELINE)
    run.report["goals"] = goals(run.report, BASELINE, [n for n in MODELS if n != BASELINE], "ClustViT-b k4/ip4",
                                f"{amp_label(device)} compiled")
    run.report["elapsed_s"] = run.elapsed()
    run.save()
    failed = [c["name"] for c in run.report["correctness"] if not c["passed"]]
    run.log(f"done: {len(run.report['correctness']) - len(failed)}/{len(run.report['correctness'])} checks passed, "
            f"{len(run.report['errors'])} section errors; {args.out / 'device_check.json'}")
    return 1 if failed else 2 if run.report["errors"] else 0


def check_fixtures(run: Run) -> None:
    files = parity.fixture_files(run.args.fixtures)
    if not files:
        raise FileNotFoundError(f"{run.args.fixtures}: no *.pt parity fixtures")
    for path in files:
        name = f"parity {path.name} (accelerated fp32)"
        try:
            torch.manual_seed(0)
            comparisons = parity.check_file(torch.load(path, weights_only=True), run.device, accelerated=True)
        except Exception as e:  # one bad file is one failed check
            run.check(name, False, None, fixture=path.name, error=f"{type(e).__name__}: {e}")
            continue
        s = parity.summarise(comparisons)
        run.check(name, s["passed"], s["max_error"], fixture=path.name, worst=s["worst"], failed=s.get("failed", []),
                  comparisons=[c.to_dict() for c in comparisons])


def load_models(run: Run, state: dict, tmp: Path) -> None:
    args = run.args
    for name, config in MODELS.items():
        options = ALWAYS + (SMOKE + (SMOKE_CLUST if "ClustViT" in name else []) if args.smoke else [])
        seg, cfg = loading.load_model(config, None, options, run.device)  # a seed path: the packaged config
        state["models"][name] = seg
        if not state["samples"]:
            state["samples"] = bench.load_samples(cfg, str(suim_root(args.data_root, tmp)), "test", args.limit)
            run.log(f"  {len(state['samples'])} SUIM samples at {tuple(state['samples'][0].image.shape[1:])}")
        per_image = bench.flops_per_image(seg, state["samples"], oracle=True)
        run.report["flops"][name] = {"config": config, "cfg_options": options,
                                     "gflops_mean": sum(per_image) / len(per_image) / 1e9,
                                     "gflops_per_image": [f / 1e9 for f in per_image]}
        run.log(f"  {name}: {run.report['flops'][name]['gflops_mean']:.2f} GFLOPs per image")


def check_batch_invariance(run: Run, state: dict) -> None:
    samples = state["samples"]
    batch = dc.cycle_batches(samples, len(samples), 1, run.device)[0]
    for name, seg in state["models"].items():
        res = dc.batch_invariance(dc.inference_copy(seg, run.device, None, None), batch)
        run.check(f"batch invariance {name} (SUIM batch {len(samples)} vs each alone, fp32, oracle)",
                  res.pop("passed"), res.pop("max_error"), **res)
    res = dc.edge_batch_invariance(run.device)
    run.check("batch invariance tiny ClustViT+UPerHead (unreduced and one-cluster images in the batch)",
              res.pop("passed"), res.pop("max_error"), **res)


def check_host_syncs(run: Run, state: dict) -> None:
    images, masks = dc.cycle_batches(state["samples"], run.args.sync_batch, 1, run.device)[0]
    for name, seg in state["models"].items():
        model = dc.inference_copy(seg, run.device, None, None)
        limit = 1 if model.num_clusters else 0  # ClustViT: the merge plan's one read of its sizes
        counts = {}
        for label, oracle in (("oracle clusters", True), ("own clusters", False)):
            if oracle and not model.num_clusters:
                continue
            with torch.no_grad():
                model(images, masks, oracle=oracle)  # warm-up: lazy initialisation is no per-forward cost
                counts[label] = dc.count_host_syncs(run.device, model, images, masks, oracle=oracle)
            run.check(f"host syncs per forward {name} ({label}, batch {len(images)}, fp32 eager) <= {limit}",
                      counts[label] <= limit, None, value=counts[label], limit=limit)
        run.report["host_syncs"][name] = {"batch": len(images), "fp32 eager": counts}


def time_inference(run: Run, state: dict, mode: str) -> None:
    args, compiled = run.args, mode.endswith("compiled")
    for name in args.compile_models if compiled else list(state["models"]):
        seg = state["models"][name]
        if compiled and run.elapsed() > args.budget_s:
            run.report["errors"].append({"section": f"inference {mode}", "error": f"{name}: skipped, "
                                         f"{run.elapsed():.0f} s > --budget-s {args.budget_s:.0f}"})
            run.log(f"  {name}: skipped (time budget)")
            continue
        run.attempt(f"inference {mode} {name}", lambda name=name, seg=seg: time_model(run, state, mode, name, seg))


def time_model(run: Run, state: dict, mode: str, name: str, seg: torch.nn.Module) -> None:
    """One model's inference rows in one mode, at every batch size."""
    args, device = run.args, run.device
    amp, compiled = not mode.startswith("fp32"), mode.endswith("compiled")
    model = dc.inference_copy(seg, device, amp_dtype(device) if amp else None, args.compile_backend if compiled else None)
    t_model = time.perf_counter()
    for b in args.compile_batch_sizes if compiled else args.batch_sizes:
        batches = dc.cycle_batches(state["samples"], b, len(state["samples"]), device)
        row = {"model": name, "mode": mode, **dc.time_inference(model, batches, amp, args.iters, args.warmup)}
        if compiled and b == args.sync_batch and device.type == "cuda":
            with autocast(device, amp):
                row["host_syncs_per_forward"] = dc.count_host_syncs(device, bench.infer, model, *batches[0], True)
        run.report["timings"]["inference"].append(row)
        run.log(f"  {name} {mode} batch {b}: {row['img_s']:.1f} img/s")
    if compiled:
        run.report["timings"].setdefault("compile_s", {})[name] = time.perf_counter() - t_model


def time_training(run: Run, state: dict) -> None:
    batch = dc.cycle_batches(state["samples"], run.args.train_batch, 1, run.device)[0]
    for name, seg in state["models"].items():
        def one(name: str = name, seg: torch.nn.Module = seg) -> None:
            row = {"model": name, "amp": "bf16", **dc.time_train_step(seg, batch, run.args.iters, run.args.warmup, run.device)}
            run.report["timings"]["train_step"].append(row)
            run.log(f"  {name} train step batch {row['batch']}: {row['ms_per_step']:.1f} ms")

        run.attempt(f"training step {name}", one)


def training_path(run: Run, state: dict, kind: str) -> None:
    name = next(n for n, s in state["models"].items() if s.num_clusters)
    batch = dc.cycle_batches(state["samples"], 2, 1, run.device)[0]
    fn = dc.fp16_gradscaler_run if kind == "fp16_gradscaler" else dc.ddp_run
    res = {"model": name, **fn(state["models"][name], batch, 4, run.device)}
    run.report["training_paths"][kind] = res
    label = "fp16 autocast + GradScaler" if kind == "fp16_gradscaler" else f"DDP world size 1 ({res['backend']})"
    run.check(f"{label}: {res['iters']} training steps of {name}, finite losses, weights updated", res["passed"], None,
              losses=res["losses"])

