"""Parity with the official implementation: check one fixture file, on any device, and record every comparison.

A fixture file (``/work/shared/fixtures/reference/README.md`` describes them) holds the official code's
inputs, weights and outputs. :func:`check_file` dispatches on its structure (never on its name), rebuilds
our model from its config, runs it on ``device`` (plain, or accelerated with ``clustvit.accel``) and
compares every output with the README's tolerances. It returns one :class:`Comparison` per compared
quantity instead of asserting, so that ``tests/test_parity.py`` asserts them all and
``tools/device_check.py`` records their errors on a GPU. Comparisons run in float32 on the CPU copy of
our outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustvit.accel import accelerate, cpu, describe
from clustvit.convert.official import backbone_cfg, segmentor_from_official
from clustvit.convert.weights import convert_state_dict, load_strict
from clustvit.models.build import build_backbone
from clustvit.models.losses import clust_loss, patch_values, pseudo_labels
from clustvit.models.segmentor import Segmentor
from clustvit.models.vit import resample_pos_embed

# The fixture README's tolerances: (atol, rtol) of torch.allclose.
FEAT = (1e-5, 1e-4)  # backbone maps, cluster logits
LOGITS = (5e-5, 1e-4)  # head logits (Segmenter's mask_norm amplifies noise)
LOSS = (1e-6, 0.0)  # losses, per-token cross-entropy
PREPROCESS = (1e-6, 0.0)
SUM_RTOL = 1e-5  # seg_logits_upsampled_sum (float64 sum), relative
VIT_ONLY_KEYS = ("num_clusters", "injection_points", "cluster_mlp_size", "init_weights_zero")


class FixtureError(ValueError):
    """A fixture file of a structure the README does not define."""


@dataclass
class Comparison:
    """One compared quantity.

    ``max_error``: largest absolute difference (exact comparisons: of the values as floats; inf for a
    shape mismatch; a scalar rule: the value it bounds). ``ratio``: largest
    ``|ours - ref| / (atol + rtol |ref|)``, passed iff <= 1 (None for exact comparisons and rules).
    """

    name: str
    passed: bool
    max_error: float
    tolerance: str
    ratio: float | None = None

    def describe(self) -> str:
        return f"{self.name}: max abs error {self.max_error:.3g} ({self.tolerance})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Collects the comparisons of one fixture file, whose models run on ``device`` (accelerated or not)."""

    def __init__(self, device: torch.device, accelerated: bool) -> None:
        self.device, self.accelerated = device, accelerated
        self.items: list[Comparison] = []
        self._kernels_checked = False

    def ready(self, model: nn.Module) -> nn.Module:
        """The model on the device in eval mode, with ``clustvit.accel``'s float32 kernels when accelerated
        (on CPU, checked once per file: oneDNN linears installed where this torch has oneDNN)."""
        model = model.to(self.device).eval()
        if not self.accelerated:
            return model
        accelerate(model, self.device, kernels=cpu.KINDS)  # every kernel, whether or not it pays on this host
        if self.device.type == "cpu" and not self._kernels_checked and torch.backends.mkldnn.is_available():
            n = describe(model)["onednn_linear"]
            self.rule(n > 0, 0.0, f"accelerated: {n} oneDNN linears installed", "> 0")
            self._kernels_checked = True
        return model

    def close(self, ours: Tensor, ref: Tensor, what: str, tol: tuple[float, float]) -> None:
        """``torch.allclose(ours, ref, atol, rtol)`` in float32 on the CPU."""
        atol, rtol = tol
        text = f"atol={atol:g} rtol={rtol:g}"
        ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
        if ours.shape != ref.shape:
            self.items.append(Comparison(f"{what} shape {tuple(ours.shape)} vs {tuple(ref.shape)}", False,
                                         float("inf"), text))
            return
        if not ref.numel():
            self.items.append(Comparison(what, True, 0.0, text, 0.0))
            return
        diff = (ours - ref).abs()
        ratio = float((diff / (atol + rtol * ref.abs())).max())
        passed = bool(torch.allclose(ours, ref, atol=atol, rtol=rtol))
        self.items.append(Comparison(what, passed, float(diff.max()), text, ratio))

    def exact(self, ours: Tensor, ref: Tensor, what: str) -> None:
        """Equal shape and values."""
        ours, ref = ours.detach().cpu(), ref.detach().cpu()
        if ours.shape != ref.shape:
            self.items.append(Comparison(f"{what} shape {tuple(ours.shape)} vs {tuple(ref.shape)}", False,
                                         float("inf"), "exact"))
            return
        err = float((ours.double() - ref.double()).abs().max()) if ref.numel() else 0.0
        self.items.append(Comparison(what, bool(torch.equal(ours, ref)), err, "exact"))

    def rule(self, passed: bool, error: float, what: str, tolerance: str) -> None:
        """A scalar rule the caller evaluated (a sum's relative error, a bound)."""
        self.items.append(Comparison(what, bool(passed), float(error), tolerance))


def fixture_files(folder: str | Path) -> list[Path]:
    """Every ``*.pt`` of a fixture folder, sorted (empty if the folder is missing)."""
    folder = Path(folder)
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


def default_folder() -> Path:
    """``../shared/fixtures/reference`` beside the checkout the package runs from (tests and the device
    check); an installed package is given the folder explicitly."""
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"


def backbone(rec: Recorder, cfg: dict, state_dict: dict) -> nn.Module:
    """Our backbone for an official backbone config, with the fixture's weights loaded strictly, ready."""
    model = build_backbone(backbone_cfg(cfg), where="fixture.config")
    load_strict(model, convert_state_dict(state_dict), source="fixture state_dict")
    return rec.ready(model)


@torch.no_grad()
def run(model: nn.Module, inputs: Tensor) -> Any:
    """Backbone output on ``inputs`` (B, 3, H, W), moved to the model's device."""
    x = inputs.to(next(model.parameters()).device)
    return model(x)


def compare_backbone(rec: Recorder, out: Any, ref: dict, prefix: str) -> None:
    """Feature maps, and for ClustViT the cluster logits, ids, counts and reduced lengths."""
    rec.rule(len(out.features) == len(ref["outs"]), abs(len(out.features) - len(ref["outs"])),
             f"{prefix} number of outputs", "exact")
    for i, (a, b) in enumerate(zip(out.features, ref["outs"])):
        rec.close(a, b, f"{prefix} outs[{i}]", FEAT)
    if "clust_logits" not in ref:
        return
    rec.close(out.clust_logits[None], ref["clust_logits"], f"{prefix} clust_logits", FEAT)
    ids = out.cluster_ids.cpu()
    rec.exact(ids, ref["cluster_ids"], f"{prefix} cluster_ids")
    K = ref["clust_logits"].shape[-1] - 1
    rec.exact(torch.stack([torch.bincount(r, minlength=K + 1) for r in ids]), ref["cluster_counts"],
              f"{prefix} cluster_counts")
    rec.exact((ids == 0).sum(1), ref["num_kept"], f"{prefix} num_kept")
    rec.rule(bool(out.merged.any()) == bool(ref["merged"]), 0.0, f"{prefix} merge decision", "exact")
    debug = ref.get("debug") or {}
    if "key_padding_mask" in debug:
        kpm = debug["key_padding_mask"]
        if kpm is None:
            rec.rule(not bool(out.merged.any()), 0.0, f"{prefix} official did not reduce", "exact")
        else:
            # Official pads every image to 1 + M_max + K; ours packs without padding. Same content: the
            # unpadded length of every image equals our sequence length.
            rec.exact(out.tokens_per_block[:, -1].cpu(), (~kpm).sum(1), f"{prefix} reduced lengths")


def check_edge(rec: Recorder, d: dict) -> None:
    """The backbone edge-case file: every subcase, with its state-dict overrides."""
    cfg = d["config"]
    if cfg["type"] != "ClustViT":
        raise FixtureError(f"{d.get('case')}: an edge-case file needs a ClustViT config, got {cfg['type']!r}")
    for name, sc in d["subcases"].items():
        sd = {**d["state_dict"], **sc["state_dict_overrides"]}
        model = backbone(rec, cfg, sd)
        out = run(model, sc["inputs"])
        ref = sc["outputs"]
        alone = ref.get("each_image_alone")
        if alone is not None:
            # Per-image semantics: our batched result equals the official result for each image *alone*.
            for b, e in enumerate(alone):
                rec.close(out.features[0][b : b + 1], e["outs"][0], f"{name} image {b} vs alone", FEAT)
                rec.rule(bool(out.merged[b]) == bool(e["merged"]), 0.0, f"{name} image {b} merge decision", "exact")
                single = run(model, sc["inputs"][b : b + 1])
                rec.close(single.features[0], e["outs"][0], f"{name} image {b} run alone", FEAT)
            rec.close(out.clust_logits[None], ref["clust_logits"], f"{name} clust_logits", FEAT)
            rec.exact(out.cluster_ids.cpu(), ref["cluster_ids"], f"{name} cluster_ids")
        else:
            compare_backbone(rec, out, ref, name)
        if "max_abs_diff_vs_vit_mini" in ref:
            vit_cfg = {**{k: v for k, v in cfg.items() if k not in VIT_ONLY_KEYS}, "type": "VisionTransformer"}
            vit_sd = {k: v for k, v in sd.items() if not k.startswith(("clusterer.", "expand_mlp."))}
            plain = run(backbone(rec, vit_cfg, vit_sd), sc["inputs"])
            diff = float((plain.features[-1] - out.features[-1]).abs().max())
            bound = float(ref["max_abs_diff_vs_vit_mini"]) + 1e-6
            rec.rule(diff <= bound, diff, f"{name} vs plain ViT", f"<= {bound:g}")


def check_backbone_file(rec: Recorder, d: dict) -> None:
    """A backbone file, with its optional resized-input case and resized position embedding."""
    cfg = d["config"]
    model = backbone(rec, cfg, d["state_dict"])
    compare_backbone(rec, run(model, d["inputs"]), d["outputs"], d["case"])
    if "resize" not in d:
        return
    r = d["resize"]
    compare_backbone(rec, run(model, r["inputs"]), r["outputs"], f"{d['case']} resize")
    dbg = r["outputs"].get("debug") or {}
    if "pos_embed_resized" in dbg:
        h, w = (s // 16 for s in r["inputs"].shape[2:])
        with torch.no_grad():
            resized = resample_pos_embed(model.pos_embed, model.grid, (h, w))
        rec.close(resized, dbg["pos_embed_resized"], "pos_embed_resized", FEAT)


def check_segmentor(rec: Recorder, d: dict) -> None:
    """A segmentor file: backbone outputs, head logits, upsampled logits (or their sum), preprocessing."""
    seg: Segmentor = segmentor_from_official(d["config"])
    load_strict(seg, convert_state_dict(d["state_dict"]), source=f"{d['case']} state_dict")
    seg = rec.ready(seg)
    x = d["inputs"].to(rec.device)
    ref = d["outputs"]
    with torch.no_grad():
        feats = seg.backbone(x)
        compare_backbone(rec, feats, ref, d["case"])
        logits = seg.decode_head(feats.features)
        up = F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=False)
    rec.close(logits, ref["seg_logits"], f"{d['case']} seg_logits", LOGITS)
    if "seg_logits_upsampled" in ref:
        rec.close(up, ref["seg_logits_upsampled"], f"{d['case']} seg_logits_upsampled", LOGITS)
    else:
        total, want = float(up.double().sum()), float(ref["seg_logits_upsampled_sum"])
        rel = abs(total - want) / max(abs(want), 1e-30)
        rec.rule(rel <= SUM_RTOL, rel, f"{d['case']} seg_logits_upsampled_sum (relative error)", f"relative {SUM_RTOL:g}")
    if "preprocess" in d:
        p = d["preprocess"]
        s = Segmentor(seg.backbone, seg.decode_head, seg.num_classes, mean=p["mean"].tolist(), std=p["std"].tolist())
        rgb = p["raw_bgr_uint8"].flip(1).to(rec.device)  # OpenCV reads BGR; our pipeline takes RGB
        rec.close(s.to(rec.device).normalise(rgb), p["normalised"], "preprocess.normalised", PREPROCESS)


def check_loss(rec: Recorder, d: dict) -> None:
    """The clustering-loss file: patch values, pseudo-labels, the loss and the per-token cross-entropy."""
    cfg, inp, ref = d["config"], d["inputs"], d["outputs"]
    if cfg.get("patch_size", 16) != 16:
        raise FixtureError(f"{d.get('case')}: patch_size {cfg['patch_size']}, expected 16")
    K = cfg["num_clusters"]
    masks = inp["masks"].to(rec.device)
    rec.exact(patch_values(masks), ref["patch_values"], "patch_values")
    rec.exact(pseudo_labels(masks, K), ref["pseudo_labels"], "pseudo_labels")
    logits = inp["clust_logits"][0].to(rec.device)  # (B, N, K+1)
    loss = clust_loss(logits, masks, K, cfg["loss_weight"])
    rec.close(loss, ref["loss"], "loss", LOSS)
    rec.close(loss, ref["loss_reduction_none"], "loss_reduction_none", LOSS)
    target = pseudo_labels(masks, K).flatten(1)  # (B, N)
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
    rec.close(ce, ref["ce_per_token_unweighted"], "ce_per_token_unweighted", LOSS)


def check_file(d: dict, device: str | torch.device = "cpu", accelerated: bool = False) -> list[Comparison]:
    """Every comparison of one loaded fixture file (README "Consuming a fixture folder").

    Args:
        d: ``torch.load(path, weights_only=True)``.
        device: where our models run.
        accelerated: run them through ``clustvit.accel.accelerate`` (float32); on CPU also checks that
            its kernels were installed where this torch has oneDNN.

    Raises:
        FixtureError: a structure the README does not define.
    """
    rec = Recorder(torch.device(device), accelerated)
    cfg = d.get("config") or {}
    kind = cfg.get("type")
    if "subcases" in d:
        check_edge(rec, d)
    elif kind in ("ClustViT", "VisionTransformer"):
        check_backbone_file(rec, d)
    elif kind == "DynSegEncoderDecoder":
        check_segmentor(rec, d)
    elif kind == "ClustLoss":
        check_loss(rec, d)
    else:
        raise FixtureError(f"{d.get('case')!r}: unknown fixture structure (config type {kind!r}), expected "
                           "subcases, ClustViT, VisionTransformer, DynSegEncoderDecoder or ClustLoss")
    return rec.items


def summarise(checks: list[Comparison]) -> dict[str, Any]:
    """passed (all), max_error (over all comparisons), the worst one (by tolerance ratio, failures first)."""
    if not checks:
        return {"passed": False, "max_error": None, "worst": "nothing compared", "num_comparisons": 0}
    worst = max(checks, key=lambda c: (not c.passed, c.ratio if c.ratio is not None else -1.0, c.max_error))
    return {
        "passed": all(c.passed for c in checks),
        "max_error": max(c.max_error for c in checks),
        "worst": worst.describe(),
        "num_comparisons": len(checks),
        "failed": [c.describe() for c in checks if not c.passed],
    }
