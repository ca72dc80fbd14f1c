"""Reproduce one of the seed's result tables: every row measured here, beside the paper's figures.

    python tools/reproduce_tables.py {ade20k,suim,rumexweeds,scaling} --data-root ROOT
        [--zoo] [--work-dirs DIR ...] [--checkpoint ROW=PATH ...] [--rows ROW ...] [--limit N]
        [--repeat-times N] [--threads T] [--device D] [--out DIR] [--cfg-options KEY=VALUE ...]

Per row: mIoU (test.py's evaluation: ``clustvit.engine.tester.run_test``, on the test split), img/s
(get_fps's timing: batch 1, accelerated as every inference entry point runs, on the device at hand)
and GFLOPs mean ± std over the images (get_flops's count, each image alone). Checkpoints, first found:
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
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clustvit import loading  # noqa: E402
from clustvit.accel import accelerate  # noqa: E402
from clustvit.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from clustvit.bench import common as bench  # noqa: E402
from clustvit.engine.checkpoint import list_checkpoints  # noqa: E402
from clustvit.inference.runtime import tune_malloc  # noqa: E402
from clustvit.zoo.paper import TABLES, row_id  # noqa: E402

FIGURES = ("miou", "img_s", "gflops")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("table", help=f"one of {', '.join(TABLES)} (or of --tables)")
    p.add_argument("--data-root", help="dataset root (default: each config's data.root)")
    p.add_argument("--zoo", action="store_true", help="use the released checkpoint of rows that have one")
    p.add_argument("--work-dirs", nargs="+", default=[], metavar="DIR", help="folders of train.py runs")
    p.add_argument("--checkpoint", action="append", default=[], metavar="ROW=PATH", help="one row's weights")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="only these rows")
    p.add_argument("--tables", help="a JSON file of tables in clustvit/zoo/paper.py's form (instead of the seed's)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="img/s and GFLOPs on the first N images only (mIoU: all)")
    p.add_argument("--repeat-times", type=int, default=3, help="timed passes for img/s (default 3)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="where results.json and table.md go (default: work_dirs/reproduce_<table>)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for every row")
    return p.parse_args(argv)


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
    from clustvit.engine.tester import run_test

    options = [*args.cfg_options, *([f"data.root={args.data_root}"] if args.data_root else [])]
    result = run_test(source, checkpoint, out / row_id(row), split=args.split, cfg_options=options)
    seg, cfg = loading.load_model(source, checkpoint, options, args.device)  # the checkpoint's own outputs
    samples = bench.load_samples(cfg, None, args.split, args.limit)
    gflops, gflops_std = bench.mean_std([f / 1e9 for f in bench.flops_per_image(seg, samples)])
    accelerate(seg, bench.model_device(seg), None)  # as get_fps times it
    fps = bench.measure_fps(seg, bench.make_batches(samples, 1), args.repeat_times, warmup=1)
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
    lines = [f"### {title}", "",
             "| Head | Backbone | mIoU (paper) | mIoU (ours) | Δ | img/s (paper) | img/s (ours) | Δ | "
             "GFLOPs (paper) | GFLOPs (ours) | Δ | weights |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, o = r["paper"], r["ours"] or {}
        lines.append(" | ".join([
            f"| {r['head']}", r["backbone"],
            _cell(p["miou"]), _cell(o.get("miou")), _diff(o.get("miou"), p["miou"]),
            _cell(p["img_s"]), _cell(o.get("img_s")), _diff(o.get("img_s"), p["img_s"]),
            _cell(p["gflops"], p["gflops_std"]), _cell(o.get("gflops"), o.get("gflops_std")),
            _diff(o.get("gflops"), p["gflops"]), r["status"] + " |"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
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


if __name__ == "__main__":
    from clustvit.cli import run

    run(main)
