"""Bulk prediction over several processes: disjoint, deterministic shares; every output written once; one
merged summary; --skip-existing resumes. A real 2-process torchrun on CPU, plus the sharding in-process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEMO, TINY_DEMO

from clustvit.inference.api import load
from clustvit.inference.predict import collect_inputs, output_stems, predict_inputs, shard

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_DEMO

pytestmark = pytest.mark.usefixtures("one_thread")


def make_inputs(folder: Path, images: int = 9) -> Path:
    """`images` small PNGs, a 6-frame video and one broken image, in one folder."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(images):
        cv2.imwrite(str(folder / f"img{k:02d}.png"), rng.integers(0, 256, (40 + k, 56, 3), dtype=np.uint8))
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for k in range(6):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    (folder / "broken.png").write_text("not a png")
    return folder


def outputs(out: Path) -> dict[str, tuple[int, int]]:
    """Label outputs -> (inode, mtime_ns): a rewrite (atomic: a new file renamed over) changes both."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir() if p.suffix in (".png", ".mkv")}


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_are_disjoint_complete_and_deterministic(world: int) -> None:
    inputs = [Path(f"d/{name}.png") for name in "qwertyuiopasd"] + ["0", "rtsp://cam/a"]
    shares = [shard(inputs, r, world) for r in range(world)]
    assert sorted(k for s in shares for k in s) == list(range(len(inputs)))
    assert shares == [shard(list(inputs), r, world) for r in range(world)]  # a rerun: the same shares
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # Given in another order, each rank still takes the same files (sorted by name first).
    reordered = inputs[::-1]
    assert [{str(reordered[k]) for k in shard(reordered, r, world)} for r in range(world)] == \
        [{str(inputs[k]) for k in s} for s in shares]
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        shard(inputs, 2, 2)


def test_ranks_write_their_own_share_once(tmp_path: Path) -> None:
    """In one process, rank 0 then rank 1 of 2: together every output, none written by both."""
    inputs = collect_inputs([make_inputs(tmp_path / "in", images=3)])
    predictor, out = load(DEMO, None, cfg_options=TINY), tmp_path / "out"
    done = [predict_inputs(predictor, inputs, out, rank=r, world=2) for r in range(2)]
    written = [{p.name for p in d.written} | {v.labels.name for v in d.videos} for d in done]
    assert not written[0] & written[1]
    stems = dict(zip(map(str, inputs), output_stems(inputs)))
    assert written[0] | written[1] == {f"{stems[str(p)]}{'.mkv' if p.suffix == '.avi' else '.png'}"
                                      for p in inputs if p.name != "broken.png"}
    assert sum(len(d.failed) for d in done) == 1


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "clustvit", "predict", str(DEMO), "none", *args, "--cfg-options", *TINY]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def test_torchrun_two_processes_write_every_output_once_and_resume(tmp_path: Path) -> None:
    folder, out = make_inputs(tmp_path / "in"), tmp_path / "out"
    inputs = collect_inputs([folder])
    first = torchrun(str(folder), "--out", str(out))
    assert first.returncode == 1, first.stderr[-3000:]  # the broken image: some inputs failed
    summaries = [line for line in first.stdout.splitlines() if line.startswith("wrote ")]
    assert len(summaries) == 1, first.stdout  # process 0 alone prints it
    # The per-process counts are each rank's shard (less the broken file), and they add up to the outputs.
    good = [sum(inputs[k].name != "broken.png" for k in shard(inputs, r, 2)) for r in range(2)]
    assert summaries[0] == (f"wrote 9 label PNG(s) and 1 label video(s) (6 frames) to {out} by 2 processes "
                            f"({good[0]} + {good[1]}); 1 failed (listed above)")
    assert len(re.findall(r"^error: .*broken\.png", first.stderr, re.M)) == 1
    before = outputs(out)
    assert sorted(before) == sorted([f"img{k:02d}.png" for k in range(9)] + ["clip.mkv"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind

    again = torchrun(str(folder), "--out", str(out), "--skip-existing")
    assert again.returncode == 1, again.stderr[-3000:]
    assert [line for line in again.stdout.splitlines() if line.startswith("wrote ")] == [
        f"wrote 0 label PNG(s) to {out} by 2 processes (0 + 0); 10 skipped (already there); 1 failed (listed above)"]
    assert outputs(out) == before  # nothing rewritten
