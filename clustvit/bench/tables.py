"""``clustvit bench tables``: reproduce one of the seed's result tables, every row measured here beside the
paper's figures.

Per row: mIoU (``clustvit test``'s evaluation: ``clustvit.engine.tester.run_test``, on the test split), img/s
(``bench fps``'s timing: batch 1, accelerated as every inference entry point runs, on the device at hand)
and GFLOPs mean ± std over the images (``bench flops``'s count, each image alone). Checkpoints, first found:
``--checkpoint ROW=PATH``; the newest ``iter_N.pth`` in ``DIR/<config name>/`` of a ``--work-dirs``
folder (train.py's layout); with ``--zoo`` the row's released checkpoint (downloaded once). A row with
none is reported as such. Rows are keyed ``segmenter_clustvit-b_k3ip3`` (head, backbone); the seed's
tables live in ``clustvit/zoo/paper.py``; ``--tables FILE`` reads tables of the same form from JSON.

Writes ``OUT/results.json`` and ``OUT/table.md`` (default OUT: work_dirs/reproduce_<table>); prints the
Markdown table: the paper's value, ours and ours minus the paper's for each figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from clustvit import loading
from clustvit.accel import accelerate
from clustvit.atomic import write_json_atomic, write_text_atomic
from clustvit.bench import common as bench
from clustvit.bench.fps import measure_fps
from clustvit.bench.report import markdown_table
from clustvit.engine.checkpoint import list_checkpoints
from clustvit.engine.tester import run_test
from clustvit.inference.runtime import tune_malloc
from clustvit.zoo.paper import TABLES, row_id

FIGURES = ("miou", "img_s", "gflops")


def find_weights(row: dict, args: argparse.Namespace, given: dict[str, str]) -> tuple[str, str | None, str] | None:
    """(model source, checkpoint, where it came from) of a row, or None."""
    rid, config = row_id(row), row["config"]
    if not Path(config).is_absolute():
        config = str(config)
    if rid in given:
        return config, given[rid], "given"
    for folder in args.work_dirs:
        found = list_checkpoints(Path(folder) / Path(config).stem)
        if found:
            return config, str(found[-1][1]), "work dir"
    if args.zoo and row.get("zoo"):
        return row["zoo"], None, "zoo"
    return None


def measure(row: dict, source: str, checkpoint: str | None, args: argparse.Namespace, out: Path) -> dict:
    """mIoU, img/s and GFLOPs (mean, std) of one row's model."""
    options = [*args.cfg_options, *([f"data.root={args.data_root}"] if args.data_root else [])]
    result = run_test(source, checkpoint, out / row_id(row), split=args.split, cfg_options=options)
    seg, cfg = loading.load_model(source, checkpoint, options, args.device)  # the checkpoint's own outputs
    samples = bench.load_samples(cfg, None, args.split, args.limit)
    gflops, gflops_std = bench.mean_std([f / 1e9 for f in bench.flops_per_image(seg, samples)])
    accelerate(seg, bench.model_device(seg), None)  # as `clustvit bench fps` times it
    fps = measure_fps(seg, bench.make_batches(samples, 1), args.repeat_times, warmup=1)
    return dict(miou=result["mIoU"], img_s=fps["img_s_median"], gflops=gflops, gflops_std=gflops_std,
                num_images=len(samples), scoring=result["scoring"], checkpoint=result["checkpoint"])


def _cell(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _diff(ours: float | None, paper: float) -> str:
    return "—" if ours is None else f"{ours - paper:+.2f}"


def markdown(title: str, rows: list[dict]) -> str:
    """The seed's table with ours and the difference beside each figure."""
    cells = []
    for r in rows:
        p, o = r["paper"], r["ours"] or {}
        cells.append([r["head"], r["backbone"],
                      _cell(p["miou"]), _cell(o.get("miou")), _diff(o.get("miou"), p["miou"]),
                      _cell(p["img_s"]), _cell(o.get("img_s")), _diff(o.get("img_s"), p["img_s"]),
                      _cell(p["gflops"], p["gflops_std"]), _cell(o.get("gflops"), o.get("gflops_std")),
                      _diff(o.get("gflops"), p["gflops"]), r["status"]])
    headers = ["Head", "Backbone", "mIoU (paper)", "mIoU (ours)", "Δ", "img/s (paper)", "img/s (ours)", "Δ",
               "GFLOPs (paper)", "GFLOPs (ours)", "Δ", "weights"]
    return f"### {title}\n\n" + markdown_table(headers, cells)


def run(args: argparse.Namespace) -> dict:
    """Measure every row that has weights; write ``OUT/results.json`` and ``OUT/table.md``; print the table."""
    tables = TABLES
    if args.tables:
        try:
            tables = json.loads(Path(args.tables).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{args.tables}: not a readable JSON tables file ({e})") from None
    if args.table not in tables:
        raise ValueError(f"table {args.table!r}: expected one of {', '.join(tables)}")
    table = tables[args.table]
    given = {}
    for item in args.checkpoint:
        rid, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--checkpoint {item!r}: expected ROW=PATH")
        given[rid] = path
    ids = [row_id(r) for r in table["rows"]]
    unknown = sorted(set(args.rows or []) - set(ids)) + sorted(set(given) - set(ids))
    if unknown:
        raise ValueError(f"rows {', '.join(unknown)}: not in table {args.table!r} (rows: {', '.join(ids)})")
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("work_dirs") / f"reproduce_{args.table}"
    rows = []
    for row in table["rows"]:
        if args.rows and row_id(row) not in args.rows:
            continue
        paper = {k: row[k] for k in (*FIGURES, "gflops_std")}
        found = find_weights(row, args, given)
        entry = dict(id=row_id(row), head=row["head"], backbone=row["backbone"], config=row["config"],
                     zoo=row.get("zoo"), paper=paper, ours=None, diff=None)
        if found is None:
            entry["status"] = "no checkpoint" + (" (none released)" if args.zoo and not row.get("zoo") else "")
        else:
            source, checkpoint, how = found
            print(f"== {entry['id']}: {source} ({how})", flush=True)
            ours = measure(row, source, checkpoint, args, out)
            entry.update(ours=ours, diff={k: ours[k] - paper[k] for k in FIGURES}, status=how)
        rows.append(entry)
    title = f"{table['title']} ({args.split} split, {args.device}, {torch.get_num_threads()} threads)"
    text = markdown(title, rows)
    result = dict(table=args.table, title=table["title"], split=args.split, device=args.device,
                  threads=torch.get_num_threads(), host=platform.node(), torch=torch.__version__,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  data_root=args.data_root, rows=rows)
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "table.md", text + "\n")
    print(text)
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}")
    return result

