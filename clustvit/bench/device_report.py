"""The device check's report: ratios against the baseline, the issue's goals, and the Markdown tables.

``report`` is the dict ``clustvit bench device`` writes as device_check.json: ``timings.inference`` rows
(``model``, ``mode``, ``batch``, ``img_s``), ``timings.train_step`` rows (``model``, ``ms_per_step``) and
``flops`` (``gflops_mean`` per model).
"""

from __future__ import annotations

from typing import Any

from clustvit.bench.report import cell, markdown_table


def add_ratios(report: dict, baseline: str) -> None:
    """Speed-up over the ``baseline`` row of the same mode and batch, FLOP ratio and efficiency, for every
    inference and training row (in place)."""
    flops = {n: f["gflops_mean"] for n, f in report["flops"].items()}
    rows = report["timings"]["inference"]
    base = {(r["mode"], r["batch"]): r["img_s"] for r in rows if r["model"] == baseline}
    for r in rows:
        ref = base.get((r["mode"], r["batch"]))
        _ratios(r, r["img_s"] / ref if ref else None, flops, baseline)
    train = {r["model"]: r for r in report["timings"]["train_step"]}
    for r in train.values():
        ref = train.get(baseline)
        _ratios(r, ref["ms_per_step"] / r["ms_per_step"] if ref else None, flops, baseline)


def goals(report: dict, baseline: str, models: list[str], fastest: str,
          mode: str = "bf16 compiled") -> list[dict[str, Any]]:
    """Issue 15's targets for ``models`` against ``baseline``, read off the rows (``mode``: the compiled
    low-precision inference rows; the bf16 training step); ``fastest``: the model that must reach 350 img/s
    at batch 1."""
    rows = {(r["model"], r["mode"], r["batch"]): r for r in report["timings"]["inference"]}
    out = []
    for name in models:
        for batch, target in ((1, 0.90), (32, 0.95)):
            r = rows.get((name, mode, batch))
            value = r.get("efficiency") if r else None
            out.append({"goal": f"{name} efficiency, batch {batch}, {mode}", "value": value,
                        "target": f">= {target}", "met": None if value is None else value >= target})
    r = rows.get((fastest, mode, 1))
    out.append({"goal": f"{fastest} img/s, batch 1, {mode}", "value": r["img_s"] if r else None,
                "target": ">= 350", "met": None if r is None else r["img_s"] >= 350})
    for r in report["timings"]["train_step"]:
        if r["model"] != baseline and r.get("efficiency") is not None:
            out.append({"goal": f"{r['model']} training-step speed-up / FLOP ratio", "value": r["efficiency"],
                        "target": ">= 0.8", "met": r["efficiency"] >= 0.8})
    return out


def _ratios(row: dict, speedup: float | None, flops: dict[str, float], baseline: str) -> None:
    ratio = flops[baseline] / flops[row["model"]] if baseline in flops and row["model"] in flops else None
    row["speedup"] = speedup
    row["flop_ratio"] = ratio
    row["efficiency"] = speedup / ratio if speedup is not None and ratio else None


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return markdown_table(header, [[cell(c) for c in row] for row in rows]) + "\n"


def markdown(report: dict) -> str:
    """The whole report as Markdown: correctness, goals, FLOPs, inference, training, host syncs, errors."""
    dev, tv = report["device"], report["torch"]
    out = [f"# Device check: {dev['name']} ({dev['type']}), torch {tv['version']}"
           + (" — SMOKE RUN (tiny models)" if report["smoke"] else "") + "\n",
           f"TF32 off (matmul {tv['tf32_matmul']}, cuDNN {tv['tf32_cudnn']}); {report.get('elapsed_s', 0):.0f} s.\n",
           "## Correctness\n",
           _table(["check", "passed", "max error", "detail"],
                  [[c["name"], c["passed"], c["max_error"], c.get("error") or c.get("worst")
                    or (f"{c['pixels_differ']} of {c['pixels']} pixels differ ({c['pixels_at_float_ties']} at float ties)"
                        if "pixels" in c else f"value {c['value']}" if "value" in c else "")]
                   for c in report["correctness"]])]
    if report.get("goals"):
        out += ["\n## Issue 15 goals\n", _table(["goal", "value", "target", "met"],
                                                [[g["goal"], g["value"], g["target"], g["met"]] for g in report["goals"]])]
    if report["flops"]:
        out += ["\n## FLOPs per image (batch 1, oracle clusters)\n",
                _table(["model", "GFLOPs"], [[n, f["gflops_mean"]] for n, f in report["flops"].items()])]
    if report["timings"]["inference"]:
        out += ["\n## Inference (SUIM samples, oracle clusters)\n",
                _table(["model", "mode", "batch", "img/s", "ms/batch", "speed-up", "FLOP ratio", "efficiency"],
                       [[r["model"], r["mode"], r["batch"], r["img_s"], r["ms_per_batch"], r.get("speedup"),
                         r.get("flop_ratio"), r.get("efficiency")] for r in report["timings"]["inference"]])]
    if report["timings"]["train_step"]:
        out += ["\n## Training step (bf16 autocast, SGD, oracle clusters)\n",
                _table(["model", "batch", "ms/step", "img/s", "speed-up", "FLOP ratio (inference)", "speed-up / FLOP ratio"],
                       [[r["model"], r["batch"], r["ms_per_step"], r["img_s"], r.get("speedup"), r.get("flop_ratio"),
                         r.get("efficiency")] for r in report["timings"]["train_step"]])]
    syncs = {n: v for n, v in report["host_syncs"].items() if isinstance(v, dict)}
    compiled_syncs = {r["model"]: r["host_syncs_per_forward"] for r in report["timings"]["inference"]
                      if "host_syncs_per_forward" in r}
    if syncs or compiled_syncs:
        out += ["\n## Host syncs per forward (CUDA sync debug mode)\n",
                _table(["model", "batch", "fp32 eager, oracle", "fp32 eager, own clusters", "bf16 compiled, oracle"],
                       [[n, v["batch"], v["fp32 eager"].get("oracle clusters"), v["fp32 eager"].get("own clusters"),
                         compiled_syncs.get(n)] for n, v in syncs.items()])]
    paths = report["training_paths"]
    if paths:
        out += ["\n## Training paths\n",
                _table(["path", "model", "passed", "losses", "detail"],
                       [[k, v["model"], v["passed"], ", ".join(f"{x:.4g}" for x in v["losses"]),
                         f"{v['steps_applied']} steps applied, {v['steps_skipped']} skipped by the scaler"
                         if "steps_applied" in v else f"backend {v['backend']}, all_reduce {v['all_reduce']}"]
                        for k, v in paths.items()])]
    if "compile_s" in report["timings"]:
        out += ["\nCompile + timing seconds per model: "
                + ", ".join(f"{n} {s:.0f}" for n, s in report["timings"]["compile_s"].items()) + "\n"]
    if report["errors"]:
        out += ["\n## Section errors\n", _table(["section", "error"], [[e["section"], e["error"]] for e in report["errors"]])]
    return "\n".join(out)
