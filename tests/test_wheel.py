"""The installed wheel, as a user gets it: built from this checkout, installed into a fresh venv, run
from a folder outside the checkout (so only what the wheel ships can be imported).

The venv sees the test environment's packages (``--system-site-packages``: torch and the rest are not
installed again) but gets its own ``clustvit``, from the wheel; each test asserts it is that one and
not the checkout. Nothing here contacts the network: the zoo download is sent through a proxy on
127.0.0.1 that refuses it (and, where this process may, into a namespace with no network at all).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from clustvit.zoo.table import ZOO

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "samples" / "SUIM" / "TEST" / "images" / "n_l_52_.jpg"
ZOO_NAME = "clustvit-b_k3ip3_suim"
PACKAGED_CONFIG = "segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3"  # a name, not a path: from the wheel
# Any proxy-aware download goes to a closed local port; no_proxy emptied so nothing bypasses it.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


@dataclass
class Installed:
    python: Path  # the venv's interpreter
    clustvit: Path  # the venv's console script
    venv: Path
    cwd: Path  # an empty folder outside the checkout
    env: dict[str, str]


def _no_network_prefix() -> list[str]:
    """``unshare -n`` where it works (root, or user namespaces allowed): a second guard beside the proxy."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Builds the wheel once and installs it into a fresh venv (the module's only slow step)."""
    root = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources, which must not land
    # in a checkout that others edit; the copy also holds exactly what a clean clone would.
    src = root / "src"
    shutil.copytree(REPO / "clustvit", src / "clustvit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel, = (root / "dist").glob("clustvit-*.whl")
    # No pip inside the venv (ensurepip takes seconds): the test environment's pip, seen through the system
    # site-packages, installs into whichever environment runs it.
    venv.create(root / "venv", system_site_packages=True, with_pip=False, symlinks=True)
    python, script = root / "venv" / "bin" / "python", root / "venv" / "bin" / "clustvit"
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    cwd = root / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OFFLINE, TORCH_HOME=str(root / "torch_home"), OMP_NUM_THREADS="1")
    return Installed(python, script, root / "venv", cwd, env)


def _run(inst: Installed, *argv: str | Path, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*_no_network_prefix(), *map(str, argv)], cwd=inst.cwd, env=inst.env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_venv_imports_the_wheel_not_the_checkout(installed: Installed) -> None:
    r = _run(installed, installed.python, "-c", "import clustvit, clustvit.configs as c; "
             "print(clustvit.__file__); print(c.find_config('" + PACKAGED_CONFIG + "'))")
    assert r.returncode == 0, r.stderr[-2000:]
    module, config = map(Path, r.stdout.split())
    assert module.is_relative_to(installed.venv) and not module.is_relative_to(REPO), module
    assert config.is_relative_to(installed.venv) and config.is_file(), config  # the configs ship in the wheel


def test_help_and_zoo_list(installed: Installed) -> None:
    r = _run(installed, installed.clustvit, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: clustvit"), r.stderr[-2000:]
    assert all(f"  {c} " in r.stdout for c in ("demo", "train", "test", "predict", "export", "zoo", "analyse"))
    r = _run(installed, installed.clustvit, "zoo", "list")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) == 1 + len(ZOO) and ZOO_NAME in r.stdout and ZOO[ZOO_NAME].url in r.stdout


def test_demo_runs_and_prints_its_table(installed: Installed) -> None:
    work = installed.cwd / "demo"
    r = _run(installed, installed.clustvit, "demo", "--work-dir", work, "--cfg-options", "schedule.max_iters=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| model    | mIoU  |" in r.stdout and "| ClustViT |" in r.stdout and "| ViT      |" in r.stdout, r.stdout
    assert (work / "demo_results.json").is_file()


def test_zoo_load_offline_fails_at_the_download_in_one_line(installed: Installed) -> None:
    r = _run(installed, installed.python, "-c", f"import clustvit; clustvit.load({ZOO_NAME!r})")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    cache = Path(installed.env["TORCH_HOME"]) / "hub" / "checkpoints"
    assert last.startswith("clustvit.zoo.download.ZooError: ") and "cannot download" in last, r.stderr[-2000:]
    assert ZOO[ZOO_NAME].url in last and str(cache) in last, last
    assert not any(cache.glob("*.pth")), "nothing cached from a failed download"


def test_predict_with_a_packaged_config_name(installed: Installed) -> None:
    if not SAMPLE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{SAMPLE} missing")
        pytest.skip(f"{SAMPLE} missing")
    out = installed.cwd / "labels"
    r = _run(installed, installed.clustvit, "predict", PACKAGED_CONFIG, "none", SAMPLE, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"wrote 1 label PNG(s) to {out}"
    assert (out / f"{SAMPLE.stem}.png").is_file()
