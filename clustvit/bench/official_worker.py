"""The official side of ``clustvit bench official``: runs in the OFFICIAL environment, not ours.

    OFFICIAL_PY .../clustvit/bench/official_worker.py   (started by ``clustvit.bench.official`` by file
                                                         path; speaks JSON lines)

It imports the official ClustViT package from an existing checkout (``load.official_src``) and answers
commands, one JSON object per line on stdin, with one JSON object per line on the protocol stream
(the process's original stdout; everything the official stack prints goes to stderr instead):

    {"cmd": "load", "official_src": DIR, "config": FILE, "checkpoint": PT, "inputs": PT,
     "num_classes": N, "threads": T}          -> {"ok": true, "info": {...}}
    {"cmd": "time"}                           -> {"ok": true, "seconds": S}   one pass over every batch
    {"cmd": "predict", "out": PT}             -> {"ok": true}                 arg-max labels saved to PT
    {"cmd": "quit"}                           -> {"ok": true}, then exit 0
    any failure                               -> {"ok": false, "error": "one line"}

``inputs`` (written by the driver, read with ``weights_only=True``) holds ``batches``: a list of
(B, 3, H, W) float RGB 0..255 images, ``mean`` / ``std`` (3,) for normalisation, and ``cluster_ids``:
None, or the oracle cluster ids (rows of N token ids) that our model used, in the order of its backbone
calls. The official ClustViT has no oracle input: its cluster ids are the arg-max of its Cluster module
(``backbone.clusterer``), so for oracle runs that module is wrapped per instance: it still runs, and its
output is replaced by one-hot logits of the next rows of ids, one row per image of each call.

This file must not import the project (the official package is named ``dynseg``, and the official
environment has no clustvit): it is run as a script, not imported there, and needs only torch, mmengine,
mmcv-lite and mmseg. Its timing loop (``Worker.time_pass``) mirrors ``clustvit.bench.timing.time_once``
on CPU for the same reason.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import types
from pathlib import Path

import torch
from torch import Tensor, nn


def _placeholder_mmcv_ops() -> None:
    """mmcv-lite ships no compiled ``mmcv._ext``; mmseg imports ``mmcv.ops`` at module level but the
    modules ClustViT and Segmenter use never call it. A placeholder whose attributes raise when called."""
    import mmcv

    def missing(name: str) -> object:
        if name.startswith("__"):  # import machinery probes (__file__, __spec__ ...) must see "absent"
            raise AttributeError(name)

        def fail(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError(f"mmcv.ops.{name} is not available in mmcv-lite")

        return fail

    ops = types.ModuleType("mmcv.ops")
    ops.__getattr__ = missing  # type: ignore[attr-defined]  # module-level __getattr__ (PEP 562)
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops


def import_official(src: Path) -> object:
    """Register the official models from checkout ``src``; returns mmseg's MODELS registry."""
    if not (src / "dynseg" / "clustvit.py").is_file():
        raise FileNotFoundError(f"{src}: not an official ClustViT checkout (no dynseg/clustvit.py)")
    _placeholder_mmcv_ops()
    # The official package __init__ also imports its CTS baseline and datasets (timm, einops ...): a bare
    # package object over the same folder lets us import only the modules the models need.
    pkg = types.ModuleType("dynseg")
    pkg.__path__ = [str(src / "dynseg")]
    sys.modules["dynseg"] = pkg
    import importlib

    for name in ("dynseg.aux_passthrough", "dynseg.clustvit", "dynseg.dynseg_encoder_decoder", "dynseg.loss.clust_loss"):
        importlib.import_module(name)
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    return MODELS


class OracleClusterer(nn.Module):
    """Runs the official Cluster module, then answers with one-hot logits of the given ids."""

    def __init__(self, inner: nn.Module, num_ids: int, rows: list[Tensor]) -> None:
        super().__init__()
        self.inner, self.num_ids, self.rows, self.next = inner, num_ids, rows, 0

    def forward(self, x: Tensor) -> Tensor:  # x: (B, N, C) -> (B, N, K+1)
        logits = self.inner(x)
        B, N, _ = x.shape
        if self.next + B > len(self.rows):
            self.next = 0  # a new pass over the same inputs
        ids = torch.stack(self.rows[self.next : self.next + B]).to(x.device, torch.long)  # (B, N)
        self.next += B
        if ids.shape != (B, N):
            raise ValueError(f"oracle cluster ids have shape {tuple(ids.shape)}, the model has {B} x {N} tokens")
        return torch.zeros_like(logits).scatter_(-1, ids[..., None], 1.0)


class Worker:
    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.batches: list[Tensor] = []
        self.mean = self.std = torch.zeros(1)

    def load(self, msg: dict) -> dict:
        from mmengine.config import Config

        if msg.get("threads"):
            torch.set_num_threads(int(msg["threads"]))
        src = Path(msg["official_src"])
        models = import_official(src)
        config = Path(msg["config"])
        if not config.is_absolute():
            config = src / config
        if not config.is_file():
            raise FileNotFoundError(f"{config}: official config not found")
        cfg = Config.fromfile(str(config))
        cfg.model.pretrained = None  # no ImageNet download: the weights come from the checkpoint
        cfg.model.backbone.init_cfg = None
        cfg.model.decode_head.num_classes = int(msg["num_classes"])  # our SUIM configs use the real 8
        cfg.model.pop("auxiliary_head", None)  # a training-only loss head, holds no weights
        model = models.build(cfg.model)
        state = torch.load(msg["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
        report = model.load_state_dict(state, strict=False)
        if report.missing_keys or report.unexpected_keys:
            raise KeyError(f"{msg['checkpoint']}: missing {report.missing_keys[:5]}, unexpected "
                           f"{report.unexpected_keys[:5]} (of {len(state)} keys)")
        data = torch.load(msg["inputs"], map_location="cpu", weights_only=True)
        self.batches = list(data["batches"])
        self.mean, self.std = data["mean"].view(1, 3, 1, 1), data["std"].view(1, 3, 1, 1)
        oracle = data.get("cluster_ids") is not None
        if oracle:
            if not hasattr(model.backbone, "clusterer"):
                raise ValueError(f"{config}: oracle cluster ids given but the backbone has no clusterer")
            rows = [r for block in data["cluster_ids"] for r in block]
            model.backbone.clusterer = OracleClusterer(model.backbone.clusterer, model.backbone.num_cluster + 1, rows)
        self.model = model.eval()
        return {"official_model": type(model).__name__, "backbone": type(model.backbone).__name__,
                "test_cfg": dict(model.test_cfg), "num_keys": len(state), "oracle": oracle,
                "threads": torch.get_num_threads(), "torch": torch.__version__,
                "commit": _read(src / ".official_commit")}

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, n_cls, H, W): normalisation, then the official inference."""
        h, w = images.shape[2:]
        meta = dict(ori_shape=(h, w), img_shape=(h, w), pad_shape=(h, w), padding_size=[0, 0, 0, 0])
        x = (images - self.mean) / self.std
        return self.model.inference(x, [dict(meta) for _ in range(images.shape[0])])

    def time_pass(self) -> float:
        if self.model is None:
            raise RuntimeError("no model loaded (send 'load' first)")
        t0 = time.perf_counter()
        for images in self.batches:
            self.logits(images)
        return time.perf_counter() - t0

    def predict(self, out: str) -> None:
        if self.model is None:
            raise RuntimeError("no model loaded (send 'load' first)")
        labels = [self.logits(images).argmax(1).to(torch.uint8) for images in self.batches]
        torch.save({"labels": labels}, out)


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def serve(inp: object, out: object) -> int:
    """Answer commands from ``inp`` on ``out`` until "quit" or end of input."""
    worker = Worker()
    for line in inp:  # type: ignore[attr-defined]
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "load":
                reply = {"ok": True, "info": worker.load(msg)}
            elif cmd == "time":
                reply = {"ok": True, "seconds": worker.time_pass()}
            elif cmd == "predict":
                worker.predict(msg["out"])
                reply = {"ok": True}
            elif cmd == "quit":
                out.write(json.dumps({"ok": True}) + "\n")  # type: ignore[attr-defined]
                out.flush()  # type: ignore[attr-defined]
                return 0
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as e:  # noqa: BLE001 - every failure goes back to the driver as one line
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
        out.write(json.dumps(reply) + "\n")  # type: ignore[attr-defined]
        out.flush()  # type: ignore[attr-defined]
    return 0


def main() -> int:
    # The protocol keeps the real stdout; the official stack's prints and logs go to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    return serve(sys.stdin, protocol)


if __name__ == "__main__":
    raise SystemExit(main())
