"""The model zoo: download through a real HTTP server on 127.0.0.1 into torch.hub's cache, strict loading of
an official-format checkpoint (a parity fixture's weights) and its predictions, the cache, truncated and
offline downloads, the SUIM 9 -> 8 class map, hub folders, the paper's configs and reproduce_tables.py."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clustvit
from clustvit import loading
from clustvit.cli import main as cli_main
from clustvit.configs import load_config
from clustvit.convert.official import backbone_cfg, head_cfg
from clustvit.zoo import ZOO, ZooEntry, ZooError, cache_path, fetch, is_cached
from clustvit.zoo.classmap import CLASS_MAPS, ClassMapped, map_logits, official_targets
from clustvit.zoo.paper import TABLES, row_id

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURE = Path(os.environ.get("CLUSTVIT_PARITY_FIXTURES", SHARED / "fixtures" / "reference")) / "segmenter_clustvit_mini.pt"
ADE = SHARED / "data" / "samples" / "ADE20K"
LOGITS = dict(atol=5e-5, rtol=1e-4)  # the fixture README's head-logit tolerance


def need(path: Path) -> None:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing")
        pytest.skip(f"{path} missing")


class Server:
    """A real HTTP server on 127.0.0.1 in a thread: ``files[path] = bytes``; ``truncate[path] = n`` sends
    only the first n bytes under the full Content-Length; ``requests`` counts GETs per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.truncate.get(self.path, len(body))])
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def hub_dir(tmp_path: Path) -> Iterator[Path]:
    """torch.hub's cache in a temporary folder."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


@pytest.fixture(scope="module")
def fixture() -> dict:
    need(FIXTURE)
    return torch.load(FIXTURE, weights_only=True)


def fixture_entry(fixture: dict, tmp_path: Path, url: str, name: str = "fixture-mini") -> ZooEntry:
    """A zoo entry for the fixture's official model: our config translated from its official one."""
    cfg = fixture["config"]
    model = dict(_delete_=True, backbone=backbone_cfg(cfg["backbone"]), decode_head=head_cfg(cfg["decode_head"]),
                 num_classes=cfg["decode_head"]["num_classes"], test_cfg=dict(mode="whole"))
    config = tmp_path / f"{name}.py"
    config.write_text(f'_base_ = "{REPO}/config/demo/segmenter_clustvit-demo_synthetic.py"\nmodel = {model!r}\n')
    return ZooEntry(name, str(config), url, url + ".py", "Synthetic", "Segmenter", 12.34)


def official_bytes(fixture: dict, tmp_path: Path) -> bytes:
    """An official (mmseg-format) checkpoint file holding the fixture's weights."""
    path = tmp_path / "official.pth"
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": fixture["state_dict"]}, path)
    return path.read_bytes()


def test_framework_metadata_loads_inert_and_code_stays_refused(fixture: dict, tmp_path: Path) -> None:
    """An mmengine checkpoint keeps history buffers (numpy inside) in its message hub: read as inert
    placeholders, the weights beside them load; a global from any other package is still refused."""
    import types

    from clustvit.convert.weights import CheckpointError, read_checkpoint

    module = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:  # what mmengine pickles: an object holding numpy arrays
        def __init__(self) -> None:
            self._log_history = np.arange(5.0)

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = module.__name__, "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    names = ("mmengine", "mmengine.logging", module.__name__)  # pickle imports the parents too
    sys.modules.update({n: module if n == module.__name__ else types.ModuleType(n) for n in names})
    try:
        hub = {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"iter": np.int64(80000)}}
        torch.save({"meta": {"iter": 80000}, "message_hub": hub, "state_dict": fixture["state_dict"]},
                   tmp_path / "mmengine.pth")
    finally:
        for n in names:
            del sys.modules[n]
    ckpt = read_checkpoint(tmp_path / "mmengine.pth")
    assert ckpt["meta"] == {"iter": 80000} and set(ckpt["state_dict"]) == set(fixture["state_dict"])
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in fixture["state_dict"].items())

    class Evil:
        def __reduce__(self) -> tuple:
            return (eval, ("1 + 1",))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refuses code.*eval"):
        read_checkpoint(tmp_path / "evil.pth")


def test_download_cache_load_predict_then_cache_only(fixture: dict, server: Server, hub_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    server.files["/files/101"] = official_bytes(fixture, tmp_path)
    entry = fixture_entry(fixture, tmp_path, server.url("/files/101"))
    monkeypatch.setitem(ZOO, entry.name, entry)
    assert not is_cached(entry) and cache_path(entry) == hub_dir / "checkpoints" / "fixture-mini-101.pth"

    model, cfg = loading.load_model(entry.name)
    assert server.requests == {"/files/101": 1} and is_cached(entry)
    assert cfg["model"]["num_classes"] == 5
    rgb = fixture["inputs"] * 127.5 + 127.5  # the official normalisation undone: our model normalises itself
    with torch.no_grad():
        logits = model.predict_logits(rgb)  # (2, 5, 128, 128), resized as the official whole-image inference
    ref = fixture["outputs"]["seg_logits_upsampled"]
    assert torch.allclose(logits, ref, **LOGITS), f"max abs error {(logits - ref).abs().max():.3g}"
    assert torch.equal(logits.argmax(1), ref.argmax(1))

    again, _ = loading.load_model(entry.name)  # from the cache: no second request
    assert server.requests == {"/files/101": 1}
    with torch.no_grad():
        assert torch.equal(again.predict_logits(rgb), logits)
    assert cli_main(["weights", "split", entry.name, "--out-dir", str(tmp_path / "parts")]) == 0  # a name too
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["backbone.safetensors", "decode_head.safetensors"]
    assert server.requests == {"/files/101": 1}

    capsys.readouterr()
    assert cli_main(["zoo", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(ZOO) and [n for n, r in rows.items() if r["cached"]] == [entry.name]
    assert rows[entry.name]["cache_path"] == str(cache_path(entry)) and rows["vit-b_suim"]["miou"] == 69.91
    assert cli_main(["zoo", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "dataset", "head", "mIoU", "cached", "url"] and len(table) == len(ZOO) + 1
    assert table[1].split() == ["clustvit-b_k3ip3_ade20k", "ADE20K", "Segmenter", "46.10", "no",
                                "https://data.dtu.dk/ndownloader/files/64205592"]


def test_truncated_download_is_detected_and_not_cached(fixture: dict, server: Server, hub_dir: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = official_bytes(fixture, tmp_path)
    server.files["/files/102"] = body
    server.truncate["/files/102"] = len(body) // 2
    entry = fixture_entry(fixture, tmp_path, server.url("/files/102"))
    monkeypatch.setitem(ZOO, entry.name, entry)
    with pytest.raises(ZooError, match=rf"truncated \({len(body) // 2} of {len(body)} bytes\)") as err:
        loading.load_model(entry.name)
    assert "\n" not in str(err.value) and str(cache_path(entry)) in str(err.value)
    assert not is_cached(entry) and list((hub_dir / "checkpoints").iterdir()) == []  # no partial file left
    server.truncate.clear()
    assert fetch(entry, progress=False).stat().st_size == len(body)  # the next try completes
    assert server.requests["/files/102"] == 2


def test_offline_fails_in_one_line_with_url_and_cache_path(fixture: dict, server: Server, hub_dir: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.url("/files/103")
    server.httpd.shutdown()
    server.httpd.server_close()  # nothing listens there any more: a refused connection, as offline
    entry = fixture_entry(fixture, tmp_path, url)
    monkeypatch.setitem(ZOO, entry.name, entry)
    with pytest.raises(ZooError) as err:
        clustvit.load(entry.name)
    msg = str(err.value)
    assert "\n" not in msg and url in msg and str(cache_path(entry)) in msg
    # A file that is not a checkpoint (an HTML error page, say) is refused too, and not cached.
    other = Server()
    other.thread.start()
    try:
        other.files["/files/104"] = b"<html>not a checkpoint</html>"
        bad = dataclasses.replace(entry, url=other.url("/files/104"), name="fixture-html")
        with pytest.raises(ZooError, match="does not load"):
            fetch(bad, progress=False)
        assert not is_cached(bad)
    finally:
        other.httpd.shutdown()
        other.httpd.server_close()


def test_suim_map_of_a_hand_made_nine_output_prediction() -> None:
    suim = CLASS_MAPS["suim9"]
    # Official outputs 0..8, one per pixel as the arg-max; output 3 and 8 never trained.
    logits = torch.full((1, 9, 1, 9), -1.0)
    for official in range(9):
        logits[0, official, 0, official] = 5.0
    logits[0, 6, 0, 3] = 1.0  # at the pixel whose arg-max is the untrained 3, FV (6) is the best mapped output
    logits[0, 1, 0, 8] = 2.0  # and at 8's pixel, HD (1)
    ours = map_logits(logits, torch.tensor(suim.source)).argmax(1)[0, 0].tolist()
    # BW HD WR->3 (3->FV) RO PF->2 FV RI->5 (8->HD)
    assert ours == [0, 1, 3, 6, 4, 2, 6, 5, 1]
    assert 7 not in ours  # SR: the official head cannot predict it
    mask = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 255]])
    assert official_targets(mask, suim).tolist() == [[0, 1, 2, 3, 4, 5, 6, 0, 255]]  # SR scored as BW


def test_class_mapped_model_predicts_our_classes() -> None:
    cfg = load_config(REPO / "config/demo/segmenter_vit-demo_synthetic.py",
                      ["model.num_classes=9", "model.backbone.depth=2", "model.backbone.out_indices=[1]"])
    raw = loading.build_model(cfg, None)
    model = ClassMapped(raw, CLASS_MAPS["suim9"])
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        mine, theirs = model.predict_logits(images), raw.predict_logits(images)
    assert mine.shape == (2, 8, 64, 64) and model.num_classes == 8 and model.backbone is raw.backbone
    torch.testing.assert_close(mine[:, 2], theirs[:, 5], rtol=0, atol=0)  # PF reads official output 5
    assert bool((mine[:, 7] < mine[:, :7].amin(1)).all())  # SR below every other class
    with pytest.raises(ValueError, match="has 6 outputs, the map expects 9"):
        ClassMapped(loading.build_model(load_config(REPO / "config/demo/segmenter_vit-demo_synthetic.py"), None),
                    CLASS_MAPS["suim9"])


def test_the_zoo_table() -> None:
    assert len(ZOO) == 12 and all(re.fullmatch(r"https://data\.dtu\.dk/ndownloader/files/\d+", e.url) for e in ZOO.values())
    assert len({e.url for e in ZOO.values()}) == 12 and len({e.official_config_url for e in ZOO.values()}) == 12
    for e in ZOO.values():
        cfg = load_config(REPO / e.config, list(e.cfg_options))
        assert cfg["data"]["type"] == e.dataset and e.head == "Segmenter"
        assert cfg["model"]["decode_head"]["type"] == "SegmenterMaskTransformerHead"
        assert (e.class_map == "suim9") == (e.dataset == "SUIM")
        assert cfg["model"]["num_classes"] == {"ADE20K": 150, "SUIM": 9, "RumexWeeds": 3}[e.dataset]
    assert ZOO["clustvit-b_k4ip3_suim"].miou == 63.26
    bb = load_config(REPO / ZOO["clustvit-b_k4ip3_suim"].config)["model"]["backbone"]
    assert (bb["num_clusters"], bb["injection_point"]) == (4, 3)


def test_every_paper_row_has_a_config_that_names_it() -> None:
    assert [len(t["rows"]) for t in TABLES.values()] == [7, 6, 6, 6]
    for table in TABLES.values():
        assert len({row_id(r) for r in table["rows"]}) == len(table["rows"])
        for row in table["rows"]:
            cfg = load_config(REPO / row["config"])  # every row's config resolves (test_config builds each)
            bb = cfg["model"]["backbone"]
            assert cfg["data"]["type"] == table["dataset"]
            head = {"Segmenter": "SegmenterMaskTransformerHead", "UPerNet": "UPerHead"}[row["head"]]
            assert cfg["model"]["decode_head"]["type"] == head
            m = re.fullmatch(r"(ViT|CTS|ClustViT)-([tsbl])(?: k(\d),ip(\d))?", row["backbone"])
            assert bb["type"] == {"ViT": "VisionTransformer", "CTS": "CTSViT", "ClustViT": "ClustViT"}[m[1]]
            assert bb["embed_dim"] == {"t": 192, "s": 384, "b": 768, "l": 1024}[m[2]]
            if m[3]:
                assert (bb["num_clusters"], bb["injection_point"]) == (int(m[3]), int(m[4])), row["backbone"]
            if row["zoo"]:
                assert ZOO[row["zoo"]].dataset == table["dataset"]


def test_hub_folder_round_trip_and_export(fixture: dict, server: Server, hub_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/files/105"] = official_bytes(fixture, tmp_path)
    entry = fixture_entry(fixture, tmp_path, server.url("/files/105"))
    monkeypatch.setitem(ZOO, entry.name, entry)

    assert cli_main(["zoo", "export", entry.name, str(tmp_path / "hub_mini")]) == 0
    folder = tmp_path / "hub_mini"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["clustvit"] == {"format": "clustvit-hub-v1", "class_map": None, "source": entry.name}
    assert saved["model"]["backbone"]["embed_dim"] == 64 and "12.34 mIoU" in (folder / "README.md").read_text()
    original, _ = loading.load_model(entry.name)
    back, _ = loading.load_model(folder)
    rgb = fixture["inputs"] * 127.5 + 127.5
    with torch.no_grad():
        torch.testing.assert_close(back.predict_logits(rgb), original.predict_logits(rgb), rtol=0, atol=0)
    predictor = clustvit.load(str(folder))  # the one-line API reads the folder too
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    assert predictor.predict(image).shape == (96, 128)
    # A class-mapped model keeps its map through the folder.
    cfg = load_config(REPO / "config/demo/segmenter_vit-demo_synthetic.py",
                      ["model.num_classes=9", "model.backbone.depth=2", "model.backbone.out_indices=[1]"])
    mapped = ClassMapped(loading.build_model(cfg, None), CLASS_MAPS["suim9"])
    clustvit.save_pretrained(mapped, tmp_path / "mapped")
    again, _ = loading.load_model(tmp_path / "mapped", map_classes=True)
    assert isinstance(again, ClassMapped) and again.num_classes == 8 and again.model.num_classes == 9


TINY_ADE = {
    "VisionTransformer": "model = dict(backbone=dict(embed_dim=32, depth=3, num_heads=2, out_indices=(2,)),\n"
                         "             decode_head=dict(embed_dim=32, depth=1, num_heads=2))\n",
    "ClustViT": "model = dict(backbone=dict(embed_dim=32, depth=3, num_heads=2, out_indices=(2,), injection_point=1,\n"
                "                           cluster_mlp_size=32), decode_head=dict(embed_dim=32, depth=1, num_heads=2))\n",
}


def test_reproduce_tables_prints_every_column(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    need(ADE)
    configs = {}
    for kind, base in (("VisionTransformer", "vit/segmenter_vit-b_mask_1xb8-160k_ade20k-512x512.py"),
                       ("ClustViT", "clustvit/ade20k/segmenter_clustvit-b_mask_1xb8-160k_ade20k-512x512_k3_ip3.py")):
        path = tmp_path / f"tiny_{kind}.py"
        path.write_text(f'_base_ = "{REPO}/config/{base}"\n' + TINY_ADE[kind]
                        + "model.update(test_cfg=dict(mode='whole'))\ndata = dict(test_pipeline=dict(scale=(64, 64), keep_ratio=False))\n")
        configs[kind] = path
    # Our own checkpoints: one through --checkpoint, one in a train.py work dir.
    vit, _ = loading.load_model(configs["VisionTransformer"], None)
    torch.save({"format": "clustvit-v1", "model": vit.state_dict()}, tmp_path / "vit.pth")
    clust, _ = loading.load_model(configs["ClustViT"], None, seed=1)
    (tmp_path / "runs" / "tiny_ClustViT").mkdir(parents=True)
    torch.save({"format": "clustvit-v1", "model": clust.state_dict()}, tmp_path / "runs" / "tiny_ClustViT" / "iter_10.pth")
    rows = [dict(head="Segmenter", backbone="ViT-tiny", config=str(configs["VisionTransformer"]), zoo=None,
                 miou=40.0, img_s=30.0, gflops=10.0, gflops_std=1.0),
            dict(head="Segmenter", backbone="ClustViT-tiny k3,ip1", config=str(configs["ClustViT"]), zoo=None,
                 miou=38.0, img_s=35.0, gflops=8.0, gflops_std=2.0),
            dict(head="UPerNet", backbone="ViT-tiny", config=str(configs["VisionTransformer"]), zoo=None,
                 miou=41.0, img_s=20.0, gflops=12.0, gflops_std=0.0)]
    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps({"tiny": dict(title="Tiny", dataset="ADE20K", rows=rows)}))
    out = tmp_path / "out"

    assert cli_main([
        "bench", "tables", "tiny", "--tables", str(tables), "--data-root", str(ADE / "ADEChallengeData2016"),
        "--checkpoint", f"segmenter_vit-tiny={tmp_path / 'vit.pth'}", "--work-dirs", str(tmp_path / "runs"),
        "--repeat-times", "1", "--limit", "2", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    printed = capsys.readouterr().out
    got = result["rows"]
    assert [r["status"] for r in got] == ["given", "work dir", "no checkpoint"]
    for r in got[:2]:
        ours = r["ours"]
        assert ours["num_images"] == 2 and 0 <= ours["miou"] <= 100 and ours["img_s"] > 0 and ours["gflops"] > 0
        for k in ("miou", "img_s", "gflops"):
            assert r["diff"][k] == pytest.approx(ours[k] - r["paper"][k])
        line = next(x for x in printed.splitlines() if x.startswith(f"| {r['head']} | {r['backbone']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2:5] == [f"{r['paper']['miou']:.2f}", f"{ours['miou']:.2f}", f"{r['diff']['miou']:+.2f}"]
        assert cells[6] == f"{ours['img_s']:.2f}" and cells[9] == f"{ours['gflops']:.2f} ± {ours['gflops_std']:.2f}"
    assert got[1]["ours"]["gflops_std"] > 0  # ClustViT: the reduction varies from image to image
    assert got[0]["ours"]["gflops_std"] == 0  # the same input size for every image: a ViT's cost is constant
    last = next(x for x in printed.splitlines() if x.startswith("| UPerNet | ViT-tiny |"))
    assert last.count("—") == 6 and last.rstrip().endswith("no checkpoint |")
    assert json.loads((out / "results.json").read_text())["rows"][2]["ours"] is None
    assert (out / "table.md").read_text().splitlines()[2].startswith("| Head | Backbone | mIoU (paper)")


def suim_samples(tmp_path: Path, num: int = 2) -> Path:
    """The first ``num`` shared SUIM samples with label PNGs (raw masks converted in a copy); the samples
    have no SR (sea-floor) pixels, so the first mask's top-left 64x64 corner is made SR."""
    import shutil

    from clustvit.data.prep_suim import convert_suim

    src = SHARED / "data" / "samples" / "SUIM" / "TEST"
    need(src)
    root = tmp_path / "suim"
    (root / "TEST" / "images").mkdir(parents=True)
    (root / "TEST" / "masks").mkdir(parents=True)
    for image in sorted((src / "images").glob("*.jpg"))[:num]:
        shutil.copy(image, root / "TEST" / "images" / image.name)
        shutil.copy(src / "masks" / f"{image.stem}.bmp", root / "TEST" / "masks" / f"{image.stem}.bmp")
    assert not convert_suim(root, progress=False).errors
    first = sorted((root / "TEST" / "masks_label").glob("*.png"))[0]
    label = np.array(Image.open(first))
    assert not (label == 7).any()
    label[:64, :64] = 7
    Image.fromarray(label).save(first)
    return root


def test_official_suim_checkpoint_through_test_py_and_the_tools(server: Server, hub_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """A 9-output official-format SUIM checkpoint, by zoo name: test.py scores our 8 classes through the map
    (predictions = the map applied to the raw outputs; SR, which the head cannot predict, scored as BW or,
    with --our-labels, as itself), and `clustvit bench fps` / `flops` take the name too."""
    from clustvit.convert.weights import to_official
    from clustvit.data import build_dataset

    root = suim_samples(tmp_path)
    config = tmp_path / "tiny_suim.py"
    config.write_text(
        f'_base_ = "{REPO}/config/clustvit/others/segmenter_clustvit-b_mask_1xb8-80k_suim-512x512_k3_ip3.py"\n'
        "model = dict(backbone=dict(embed_dim=32, depth=3, num_heads=2, out_indices=(2,), injection_point=1,\n"
        "                           cluster_mlp_size=32), decode_head=dict(embed_dim=32, depth=1, num_heads=2))\n"
        "data = dict(test_pipeline=dict(scale=(128, 128)))\n")
    raw = loading.build_model(load_config(config, ["model.num_classes=9"]), None, seed=3)
    torch.save({"meta": {}, "state_dict": to_official(raw.state_dict())}, tmp_path / "suim9.pth")
    server.files["/files/106"] = (tmp_path / "suim9.pth").read_bytes()
    entry = ZooEntry("tiny-suim9", str(config), server.url("/files/106"), server.url("/c"), "SUIM", "Segmenter",
                     50.0, cfg_options=("model.num_classes=9", f"data.root={root}"), class_map="suim9")
    monkeypatch.setitem(ZOO, entry.name, entry)
    assert cli_main(["test", entry.name, "--work-dir", str(tmp_path / "seed"), "--out", str(tmp_path / "pred")]) == 0
    seed = json.loads((tmp_path / "seed" / "results.json").read_text())
    assert seed["scoring"] == "official" and seed["class_map"] == "suim9" and len(seed["classes"]) == 8
    assert seed["IoU"][7] is None  # SR: absent from the scored labels and never predicted, out of the mean
    assert "scored as the official masks label them" in capsys.readouterr().out
    # The saved predictions are the map applied to the raw 9 outputs.
    official_to_ours = torch.tensor([0, 1, 3, -1, 4, 2, 6, 5, -1])
    dataset = build_dataset(load_config(config, [f"data.root={root}"])["data"], "test")
    agree = total = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        with torch.no_grad():
            logits = raw.predict_logits(sample["image"][None].float())
        logits = F.interpolate(logits, sample["mask"].shape[-2:], mode="bilinear", align_corners=False)
        want = official_to_ours[logits.argmax(1)[0]]
        got = torch.from_numpy(np.array(Image.open(tmp_path / "pred" / f"{Path(sample['path']).stem}.png")))
        assert not bool((got == 7).any())
        mapped = want >= 0
        agree += int((got[mapped] == want[mapped]).sum())
        total += int(mapped.sum())
    assert total > 0 and agree / total > 0.999, agree / total  # accelerated kernels may flip a near-tie

    assert cli_main(["test", entry.name, "--our-labels", "--work-dir", str(tmp_path / "ours")]) == 0
    ours = json.loads((tmp_path / "ours" / "results.json").read_text())
    assert ours["scoring"] == "ours" and ours["IoU"][7] == 0.0  # SR is in the labels, never predicted
    assert ours["IoU"][1:7] == seed["IoU"][1:7] and ours["mIoU"] < seed["mIoU"]  # BW and the mean change
    assert ours["IoU"][0] <= seed["IoU"][0]
    assert server.requests == {"/files/106": 1}  # downloaded once, then the cache


    assert cli_main(["bench", "fps", entry.name, "--shape", "64", "64", "--repeat-times", "1",
                     "--work-dir", str(tmp_path / "fps")]) == 0
    fps = json.loads((tmp_path / "fps" / "fps.json").read_text())
    assert fps["checkpoint"] is None and fps["img_s_median"] > 0
    assert cli_main(["bench", "flops", entry.name, "--shape", "64", "64", "--work-dir", str(tmp_path / "flops")]) == 0
    assert json.loads((tmp_path / "flops" / "gflops.json").read_text())["gflops_mean"] > 0
    capsys.readouterr()
    assert cli_main(["bench", "fps", str(config), "--shape", "64", "64"]) == 2
    assert "give a CHECKPOINT" in capsys.readouterr().err


def test_a_cts_checkpoint_needs_no_policy_weights_file(tmp_path: Path) -> None:
    """The CTS configs name a policy-net file (user-trained, not shipped); a whole-segmentor checkpoint (a
    released one, or ours) already holds the policy net, so loading one never reads that file."""
    config = tmp_path / "tiny_cts.py"
    config.write_text(
        f'_base_ = "{REPO}/config/cts/segmenter_cts-b_mask_1xb8-80k_suim-512x512.py"\n'
        "model = dict(backbone=dict(embed_dim=32, depth=3, num_heads=2, out_indices=(2,), img_size=(64, 64),\n"
        "                           num_shared=2), decode_head=dict(embed_dim=32, depth=1, num_heads=2))\n")
    assert load_config(config)["model"]["backbone"]["policy_weights"] == "weights/policynet.safetensors"
    with pytest.raises(FileNotFoundError, match="policy_weights"):
        loading.load_model(config, None)  # random weights: the policy file is needed, and missing
    trained, _ = loading.load_model(config, None, ["model.backbone.policy_weights=None"], seed=2)
    torch.save({"format": "clustvit-v1", "model": trained.state_dict()}, tmp_path / "cts.pth")
    loaded, _ = loading.load_model(config, tmp_path / "cts.pth")
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_logits(images), trained.predict_logits(images), rtol=0, atol=0)
