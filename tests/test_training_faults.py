"""Training where users break things: pre-emption signals, two runs in one work dir, full or refusing disks.

Real signals (``os.kill`` to this process, ``killpg`` to a torchrun rank), real processes, a real OS lock,
a real tmpfs (skipped where mount is not permitted) and a real kernel file-size limit (always runs).
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from clustvit import cli
from clustvit.atomic import WriteError
from clustvit.configs import load_config
from clustvit.engine.checkpoint import read_training_checkpoint, save_checkpoint
from clustvit.engine.lock import WorkDirLock, WorkDirLockedError
from clustvit.engine.logging import RunLogger
from clustvit.engine.trainer import train

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# Validation after every iteration: a stop always lands on an iteration whose validation is still due.
TINY = tiny_config("schedule = dict(max_iters=12, warmup_iters=0, log_interval=1, checkpoint_interval=12, "
                   "val_interval=1)")

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures `one_thread`, `tiny`: conftest.py


def _records(path: Path) -> list[dict]:
    """A jsonl log without its wall-clock fields."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "img_s"} for r in rows]


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def reference(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run: 12 iterations, validated after each."""
    work = tmp_path_factory.mktemp("ref")
    train(load_config(tiny), work, tensorboard=False)
    return work


# ------------------------------------------------------------------------ graceful stop
def test_sigint_stops_after_the_step_then_resume_is_bit_identical(tmp_path: Path, tiny: Path, reference: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """A real SIGINT mid-run: exit 75 with a checkpoint of the last step; --resume equals no stop at all."""
    work = tmp_path / "w"
    late: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda s, f: late.append(s))  # if it lands outside training

    def send() -> None:
        while _lines(work / "log.jsonl") < 3:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        rc = cli.main(["train", str(tiny), "--work-dir", str(work), "--no-tensorboard"])
    finally:
        sender.join(30)
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 75 and not late, err
    ckpts = sorted(work.glob("iter_*.pth"))
    assert len(ckpts) == 1, ckpts  # the stop's checkpoint only (the interval is the whole run)
    stopped = read_training_checkpoint(ckpts[0])["iter"]
    assert 3 <= stopped < 12 and read_training_checkpoint(ckpts[0])["pending_val"] is True
    assert err == (f"stopped: SIGINT: stopped after iteration {stopped} of 12, wrote {ckpts[0]} (its validation "
                   "runs on resume); continue with --resume")
    assert [r["iter"] for r in _records(work / "log.jsonl")] == list(range(1, stopped + 1))
    assert [r["iter"] for r in _records(work / "val.jsonl")] == list(range(1, stopped))  # stopped's is pending
    assert not list(work.glob(".*.tmp"))

    assert cli.main(["train", str(tiny), "--work-dir", str(work), "--resume", "--no-tensorboard"]) == 0
    ref, got = (torch.load(d / "iter_12.pth", weights_only=True) for d in (reference, work))
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])
    assert _records(work / "log.jsonl") == _records(reference / "log.jsonl")
    assert _records(work / "val.jsonl") == _records(reference / "val.jsonl")  # the pending one ran first


def test_a_signal_left_out_of_stop_signals_keeps_its_handler(tmp_path: Path, tiny: Path) -> None:
    """stop_signals=("SIGTERM",): SIGUSR1 reaches the handler that was there, training goes on to the end."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    during: dict[str, object] = {}

    def send() -> None:
        while _lines(tmp_path / "log.jsonl") < 1:
            time.sleep(0.002)
        during["usr1"], during["term"] = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        out = train(load_config(tiny, ["schedule.max_iters=12", "schedule.val_interval=13"]), tmp_path,
                    tensorboard=False, stop_signals=("SIGTERM",))
        sender.join(30)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert out["iter"] == 12 and seen == [signal.SIGUSR1]
    assert during["term"] not in (signal.SIG_DFL, signal.SIG_IGN)  # ours, while training
    assert during["usr1"] is not None and during["usr1"] not in (signal.SIG_DFL, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored after the run
    with pytest.raises(ValueError, match="SIGKILL cannot be caught"):
        train(load_config(tiny), tmp_path / "x", stop_signals=("KILL",))


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _rank(pid: int) -> int | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((int(v[5:]) for v in env if v.startswith(b"RANK=")), None)


def _holds(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (its /proc fd links)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == os.path.realpath(path):
                return True
        except OSError:
            pass
    return False


def test_torchrun_sigterm_to_one_rank_stops_every_rank_at_the_same_iteration(
        tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture) -> None:
    """SIGTERM to rank 1's process group (it and its DataLoader worker) only: both ranks stop after the same
    step, rank 0 writes that step's checkpoint; meanwhile a second run in the work dir is refused."""
    work, log = tmp_path / "w", tmp_path / "torchrun.log"
    opts = ["schedule.max_iters=400", "schedule.checkpoint_interval=400", "schedule.val_interval=401",
            "data.num_workers=1"]
    with open(log, "w") as out:  # the seed's `torchrun ... train.py CONFIG`: the shim under torchrun
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                 "train.py", str(tiny), "--work-dir", str(work), "--no-tensorboard",
                                 "--cfg-options", *opts], cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 150
        while _lines(work / "log.jsonl") < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, log.read_text()[-3000:]
        ranks = {_rank(p): p for p in _children(proc.pid)}
        assert sorted(ranks) == [0, 1], ranks
        # The work dir is taken: one line naming the process that holds it (rank 0), nothing touched.
        assert cli.main(["train", str(tiny), "--work-dir", str(work), "--resume", "--no-tensorboard"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {work}: in use by another run (pid {ranks[0]},"), err
        workers = _children(ranks[0])
        assert workers and _holds(ranks[0], work / ".lock"), (workers, log.read_text()[-3000:])
        holders = [w for w in workers if _holds(w, work / ".lock")]
        assert not holders, (holders, workers)  # the worker closed its inherited copy
        os.killpg(ranks[1], signal.SIGTERM)  # torchrun starts each rank in its own session
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"torchrun still running 120 s after the SIGTERM:\n{log.read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    lines = ["stopped: " + line.split("stopped: ", 1)[1] for line in text.splitlines() if "stopped: " in line]
    assert len(lines) == 2, text[-3000:]
    ckpts = sorted(work.glob("iter_*.pth"))
    assert len(ckpts) == 1, (ckpts, text[-3000:])
    k = read_training_checkpoint(ckpts[0])["iter"]
    assert 2 <= k < 400, text[-3000:]
    assert f"stopped: SIGTERM: stopped after iteration {k} of 400, wrote rank 0's checkpoint; continue with " \
           "--resume [rank 1]" in lines, lines
    assert f"stopped: a stop signal on another rank: stopped after iteration {k} of 400, wrote {ckpts[0]}; " \
           "continue with --resume [rank 0]" in lines, lines
    assert "exitcode  : 75" in text, text[-3000:]  # torchrun's report of the ranks' status
    assert WorkDirLock(work).acquire()  # released


_HOLDER = """
import os, sys, time
from clustvit.engine.lock import WorkDirLock
lock = WorkDirLock(sys.argv[1]).acquire()
ready_r, ready_w = os.pipe()
if os.fork() == 0:  # a child of the run, as a DataLoader worker is
    if sys.argv[2] == "close":
        lock.close_inherited()
    os.write(ready_w, b"x")  # the child has done what it does with the lock
    time.sleep(60)
    os._exit(0)
os.read(ready_r, 1)  # report only once the child is set up: the test kills this process next
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("child", ["close", "keep"])
def test_lock_ends_with_a_sigkilled_run(tmp_path: Path, child: str) -> None:
    """SIGKILL the holder: its lock is gone at once, unless a forked child kept the descriptor open."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), child], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, text=True)
    kid = None
    try:
        assert proc.stdout.readline() == "locked\n"
        kid = _children(proc.pid)[0]
        with pytest.raises(WorkDirLockedError) as err:
            WorkDirLock(tmp_path).acquire()
        assert str(err.value) == (f"{tmp_path}: in use by another run (pid {proc.pid}, holding {tmp_path / '.lock'}); "
                                  "wait for it to end, stop it, or choose another --work-dir")
        proc.kill()
        proc.wait()
        if child == "close":
            WorkDirLock(tmp_path).acquire().release()  # no stale lock, though the child lives on
        else:
            with pytest.raises(WorkDirLockedError):  # the case close_inherited exists for
                WorkDirLock(tmp_path).acquire()
    finally:
        proc.kill()
        if kid is not None:
            os.kill(kid, signal.SIGKILL)


# ------------------------------------------------------------------------ disks that refuse the bytes
def _state(it: int, notes: str = "") -> dict:
    return {"model": {"w": torch.full((1000,), float(it))}, "config": {"notes": notes}, "iter": it, "optimizer": {}}


def test_file_size_limit_mid_write_one_line_and_nothing_lost(tmp_path: Path, tiny: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """The kernel refuses bytes past RLIMIT_FSIZE (EFBIG) in the middle of torch's zip write: exit 4, one line
    naming the checkpoint and the bytes it needs; the previous checkpoint and the log are intact, no temp."""
    opts = ["schedule.max_iters=4", "schedule.checkpoint_interval=2", "schedule.val_interval=5"]
    assert cli.main(["train", str(tiny), "--work-dir", str(tmp_path), "--no-tensorboard", "--cfg-options",
                     *opts, "schedule.max_iters=2"]) == 0
    before = (tmp_path / "iter_2.pth").read_bytes()
    capsys.readouterr()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))  # config and log lines stay below it
    try:
        rc = cli.main(["train", str(tiny), "--work-dir", str(tmp_path), "--resume", "--no-tensorboard",
                       "--cfg-options", *opts])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert rc == 4 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'iter_4.pth'}: cannot write (File too large); needs about ")
    needed = int(err[0].split("needs about ")[1].split(" bytes")[0].replace(",", ""))
    assert len(before) < needed < len(before) + (128 << 10)  # the estimate: tensors plus a small allowance
    assert (tmp_path / "iter_2.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".lock"]  # no temp file
    assert [r["iter"] for r in _records(tmp_path / "log.jsonl")] == [1, 2, 3, 4]


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A real 1.5 MiB tmpfs (root: mount -t tmpfs); skipped where mounting is not permitted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip() or r.returncode}); "
                    "test_file_size_limit_mid_write_one_line_and_nothing_lost covers the write failure")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_one_line_previous_checkpoint_and_log_intact(small_tmpfs: Path, tiny: Path) -> None:
    """On a 1.5 MiB tmpfs: the 2nd checkpoint (~0.9 MiB) is refused before a byte is written; a write the
    estimate misses fails mid-way on ENOSPC; a log line on the full disk fails in one line too; remounted
    read-only, a new run fails at its lock file."""
    work = small_tmpfs / "run"
    cfg = load_config(tiny, ["schedule.max_iters=4", "schedule.checkpoint_interval=2", "schedule.val_interval=5"])
    with pytest.raises(WriteError) as err:
        train(cfg, work, tensorboard=False)
    before = (work / "iter_2.pth").read_bytes()
    msg = str(err.value)
    assert msg.startswith(f"{work / 'iter_4.pth'}: cannot write (No space left on device); needs about ")
    assert msg.endswith(f" bytes free in {work}") and "\n" not in msg
    needed, free = (int(msg.split(s)[1].split(" bytes")[0].replace(",", "")) for s in ("needs about ", ", "))
    assert free < needed and err.value.errno == errno.ENOSPC
    assert [r["iter"] for r in _records(work / "log.jsonl")] == [1, 2, 3, 4]
    # Pickled data the estimate does not count (a 0.8 MB string): the write itself meets the full disk.
    with pytest.raises(WriteError, match=r"iter_9\.pth: cannot write \(No space left on device\)"):
        save_checkpoint(_state(9, "x" * 800_000), work)
    assert (work / "iter_2.pth").read_bytes() == before and not (work / "iter_9.pth").exists()
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == [".lock"]  # no temp file
    log = RunLogger(work, 4, 4, tensorboard=False)
    fd = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)  # take every byte left
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(WriteError, match=re.escape(f"{work / 'log.jsonl'}: cannot write (No space left on device); "
                                                   "needs about ") + r"[\d,]+ bytes, 0 bytes free"):
        log.log_train(5, {"loss": 1.0}, 0.1, {f"extra_{i}": 1.0 for i in range(1000)})  # past the last page
    assert [r["iter"] for r in _records(work / "log.jsonl")] == [1, 2, 3, 4]
    # Read-only: the run ends before it starts, at the lock file (the work dir of a fresh run).
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with pytest.raises(WriteError, match=re.escape(f"{small_tmpfs / 'new' / '.lock'}: cannot write (Read-only")):
        train(cfg, small_tmpfs / "new", tensorboard=False)
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler", "run"]
