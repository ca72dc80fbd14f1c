"""Checkpoints in, our state dict out: read safely, detect the format, convert names, load strictly.

Formats (detected from the keys, never from the file name):
  * ``official``: mmseg names (``layers.{i}.attn.attn.in_proj_weight``, ``clusterer.net.0`` ...), optionally
    with ``backbone.`` / ``decode_head.`` prefixes — official ClustViT/ViT/CTS checkpoints and the mmseg
    ImageNet ViT weights the configs name by URL;
  * ``timm``: timm/augreg ViT names (``blocks.{i}.attn.qkv`` ... plus ``head.*``);
  * ``clustvit``: our own checkpoints (``{"format": "clustvit-v1", "model": ...}``).
Files are only ever read with ``torch.load(weights_only=True)`` or safetensors. ``load_for_finetune`` starts a
model from a checkpoint trained for another class count (``clustvit train --from``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from clustvit.models.vit import VisionTransformer, resample_pos_embed


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message lists every problem."""


# Official (mmseg) name <-> ours, with the backbone./decode_head. prefix stripped. "{i}" stands for a
# number; a name ending in "." renames a module (any parameter after it), otherwise the whole key.
# One table, read left-to-right to load official weights and right-to-left to write them.
_NAMES: list[tuple[str, str]] = [
    ("patch_embed.projection.", "patch_embed.proj."),
    ("layers.{i}.ln1.", "blocks.{i}.norm1."),
    ("layers.{i}.ln2.", "blocks.{i}.norm2."),
    ("layers.{i}.attn.attn.in_proj_weight", "blocks.{i}.attn.qkv.weight"),  # packed q, k, v in both
    ("layers.{i}.attn.attn.in_proj_bias", "blocks.{i}.attn.qkv.bias"),
    ("layers.{i}.attn.attn.out_proj.", "blocks.{i}.attn.proj."),
    ("layers.{i}.ffn.layers.0.0.", "blocks.{i}.mlp.fc1."),
    ("layers.{i}.ffn.layers.1.", "blocks.{i}.mlp.fc2."),
    ("ln1.", "norm."),  # the backbone's final norm
    ("clusterer.net.0.", "cluster.fc1."),
    ("clusterer.net.2.", "cluster.fc2."),
    ("expand_mlp.0.", "regenerator.fc1."),
    ("expand_mlp.2.", "regenerator.fc2."),
    ("psp_modules.{i}.1.", "ppm.{i}."),  # UPerHead: Sequential(pool, ConvModule); we keep the ConvModule
]


def _rule(src: str, dst: str) -> tuple[re.Pattern, str]:
    pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + ("" if src.endswith(".") else "$")
    return re.compile(pattern), dst.replace("{i}", r"\1")


_TO_OURS = [_rule(official, ours) for official, ours in _NAMES]
_TO_OFFICIAL = [_rule(ours, official) for official, ours in _NAMES]


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
    """Apply the first matching rule to the key's unprefixed part."""
    prefix, _, rest = key.partition(".") if key.startswith(("backbone.", "decode_head.")) else ("", "", key)
    for pattern, repl in rules:
        rest, n = pattern.subn(repl, rest)
        if n:
            break
    return f"{prefix}.{rest}" if prefix else rest


# Training frameworks store their bookkeeping beside the weights (mmengine: the message hub's history
# buffers, numpy scalars in the metadata). Classes from these packages are read as inert placeholders
# (below); anything else that is not a tensor, container or number stays refused.
_METADATA_PACKAGES = ("mmengine", "mmseg", "mmcv", "numpy")
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")  # torch's message, torch >= 2.4


class _Inert:
    """Stands in for a metadata object of a training framework: takes any arguments and state, runs nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


def _torch_load(path: Path, stubs: Sequence[str] = ()) -> object:
    with warnings.catch_warnings():
        # Raised for any plain pickle (not written by torch.save) just before it is refused or read:
        # noise on stderr beside the one-line error.
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        # Each stand-in is a class of the stored name's module and name, so that the allow-list matches it
        # on every torch (the (class, name) pair form of safe_globals needs torch >= 2.6).
        inert = [type(name.rpartition(".")[2], (_Inert,), {"__module__": name.rpartition(".")[0]}) for name in stubs]
        with torch.serialization.safe_globals(inert):
            return torch.load(path, map_location="cpu", weights_only=True)


def _load_with_metadata_stubs(path: Path) -> object:
    """``torch.load(weights_only=True)``, retried with stand-ins for the framework metadata it refuses.

    The refused names come from torch's scan of the file where it has one (torch >= 2.6, one read),
    else from each refusal in turn; a name outside the metadata packages is refused as torch refused it.
    """
    stubs: list[str] = []
    for _ in range(64):  # an official checkpoint refers to a handful of classes
        try:
            return _torch_load(path, stubs)
        except Exception as e:  # noqa: BLE001 - retried below only for framework metadata
            refused = _REFUSED_GLOBAL.search(str(e))
            if refused is None or refused[1] in stubs:
                raise
            scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
            try:
                names = scan(path) if scan is not None and not stubs else [refused[1]]
            except Exception:  # noqa: BLE001 - not a zip checkpoint: report the refusal
                raise e from None
            if not names or any(n.split(".", 1)[0] not in _METADATA_PACKAGES for n in names):
                raise
            stubs += [n for n in names if n not in stubs]
    raise RuntimeError(f"more than 64 framework metadata classes, expected a handful: {stubs[:5]} ...")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file safely; raise CheckpointError with the path on anything unexpected.

    ``torch.load(weights_only=True)`` only: a pickle that would run code is refused. Metadata objects of
    mmengine / mmseg / mmcv / numpy (an official checkpoint's ``message_hub``, ``meta``) load as inert
    placeholders, so the tensors beside them can be read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure means "not a safetensors file"
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = _load_with_metadata_stubs(path)
    except Exception as e:  # noqa: BLE001 - pickles with code, truncated files, text files ...
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        # Skip torch's boilerplate (its first line even suggests weights_only=False): keep the reason,
        # e.g. "unsupported GLOBAL posix.system" for a pickle that would run code.
        boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1) ", "(2) ")
        first = next((line for line in lines if not line.startswith(boilerplate)), lines[0])
        first = first.removeprefix("WeightsUnpickler error: ")
        raise CheckpointError(
            f"{path}: not a loadable checkpoint (read with weights_only=True, which refuses code): {first}"
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def unwrap(ckpt: Mapping) -> dict[str, Tensor]:
    """Return the tensor state dict inside common wrappers (``state_dict``, ``model``, ``module``)."""
    for key in ("state_dict", "model", "module", "state_dict_ema"):
        if key in ckpt and isinstance(ckpt[key], Mapping):
            return unwrap(ckpt[key])
    sd = {k: v for k, v in ckpt.items() if isinstance(v, Tensor)}
    if not sd:
        raise CheckpointError(f"no tensors found in checkpoint (top-level keys: {sorted(ckpt)[:8]})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def detect_format(sd: Mapping[str, Tensor]) -> str:
    """'official' (mmseg names), 'timm', or 'clustvit' (ours), from the keys alone."""
    keys = list(sd)
    if any(re.search(r"(^|\.)layers\.\d+\.(ln1|attn\.attn|ffn)\.", k) for k in keys) or any(
        k.endswith("patch_embed.projection.weight") for k in keys
    ):
        return "official"
    if any(re.search(r"(^|\.)blocks\.\d+\.attn\.qkv\.", k) for k in keys):
        return "clustvit" if any(k.startswith(("backbone.", "decode_head.")) for k in keys) else "timm"
    return "clustvit"


def convert_key(key: str) -> str:
    """One official (mmseg) key, prefix kept, in our naming."""
    return _rename(key, _TO_OURS)


def official_key(key: str) -> str:
    """One of our keys (prefix kept) in the official mmseg naming."""
    return _rename(key, _TO_OFFICIAL)


def to_official(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict -> official key names (to share weights with the official code)."""
    return {official_key(k): v for k, v in sd.items()}


def convert_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Any supported format -> our names (prefixes such as ``backbone.`` preserved)."""
    fmt = detect_format(sd)
    if fmt == "official":
        return {convert_key(k): v for k, v in sd.items()}
    return dict(sd)


def load_strict(module: nn.Module, sd: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Load with every missing key, unexpected key and shape mismatch reported by name."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(sd)
        if sd[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                parts.append(f"{name} ({len(items)}): " + ", ".join(items))
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    module.load_state_dict(sd, strict=True)


def fit_backbone(sd: dict[str, Tensor], backbone: nn.Module, report: list[str]) -> dict[str, Tensor]:
    """Adapt a backbone state dict (our names) to ``backbone``: pos-embed grid and patch-embed bias."""
    sd = dict(sd)
    if isinstance(backbone, VisionTransformer) and "pos_embed" in sd:
        n = sd["pos_embed"].shape[1] - 1
        side = int(round(n**0.5))
        if side * side == n and (side, side) != backbone.grid:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], (side, side), backbone.grid)
            report.append(f"resampled pos_embed {side}x{side} -> {backbone.grid[0]}x{backbone.grid[1]} (bicubic)")
    if "patch_embed.proj.bias" in sd and "patch_embed.proj.bias" not in backbone.state_dict():
        # The official mmseg ViT has patch_bias=False and loads pretrained weights non-strictly, dropping it.
        del sd["patch_embed.proj.bias"]
        report.append("dropped patch_embed.proj.bias (the official model has no patch-embedding bias)")
    return sd


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a whole-segmentor checkpoint (ours or official) strictly into ``model``.

    Returns:
        The raw checkpoint dict (ours carries ``iter``, ``config`` ...).
    """
    ckpt = read_checkpoint(path)
    try:
        sd = convert_state_dict(unwrap(ckpt))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None  # name the file: the user may have passed several
    if not any(k.startswith("backbone.") for k in sd):
        raise CheckpointError(f"{path}: no 'backbone.' keys: this is not a whole-segmentor checkpoint")
    backbone_sd = fit_backbone(
        {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}, model.backbone, []
    )
    sd = {**{f"backbone.{k}": v for k, v in backbone_sd.items()}, **{k: v for k, v in sd.items() if not k.startswith("backbone.")}}
    sd.update({k: v for k, v in model.state_dict().items() if _is_buffer_only(k)})
    load_strict(model, sd, source=str(path))
    return ckpt


def _is_buffer_only(key: str) -> bool:
    """Buffers that are ours alone (normalisation constants), absent from official checkpoints."""
    return key in ("mean", "std")


def load_pretrained_backbone(backbone: nn.Module, url_or_path: str) -> list[str]:
    """Initialise a backbone from ImageNet ViT weights (mmseg or timm format), by URL or local path.

    Parameters absent from a plain ViT (Cluster module, Regenerator, CTS policy) keep their
    initialisation; everything else must match. Returns a report of what was adapted.
    """
    if re.match(r"^https?://", url_or_path):
        sd = torch.hub.load_state_dict_from_url(url_or_path, map_location="cpu", weights_only=True, progress=True)
    else:
        sd = read_checkpoint(url_or_path)
    sd = convert_state_dict(unwrap(sd))
    sd = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()}
    report: list[str] = []
    dropped = sorted(k for k in sd if k.startswith(("head.", "fc_norm.", "decode_head.", "pre_logits.")))
    for k in dropped:
        del sd[k]
    if dropped:
        report.append(f"dropped {len(dropped)} classifier keys ({', '.join(dropped[:3])}...)")
    sd = fit_backbone(sd, backbone, report)
    own = backbone.state_dict()
    new_parts = sorted(k for k in own if k not in sd and k.startswith(("cluster.", "regenerator.", "policy_net.")))
    for k in new_parts:
        sd[k] = own[k]
    if new_parts:
        report.append(f"kept the initialisation of {len(new_parts)} ClustViT/CTS-only parameters")
    load_strict(backbone, sd, source=url_or_path)
    return report


@dataclass
class FinetuneLoad:
    """What ``load_for_finetune`` did: the class-specific keys it left at the model's initialisation."""

    reinitialised: list[str]  # class-specific head keys whose checkpoint shape is for another class count
    loaded: int  # keys copied from the checkpoint
    num_classes: int  # the model's
    checkpoint_classes: int  # the checkpoint's (== num_classes when nothing was re-initialised)
    notes: list[str] = field(default_factory=list)  # adaptations: pos-embed resampled ...

    def summary(self, source: str) -> str:
        """The one line a run prints about it."""
        notes = "".join(f"; {n}" for n in self.notes)
        if not self.reinitialised:
            return (f"clustvit: --from {source}: loaded all {self.loaded} keys (the checkpoint has the same "
                    f"{self.num_classes} classes){notes}")
        return (f"clustvit: --from {source}: re-initialised {len(self.reinitialised)} class-specific keys for "
                f"{self.num_classes} classes (was {self.checkpoint_classes}): {', '.join(self.reinitialised)}; "
                f"loaded the other {self.loaded} keys{notes}")


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _class_axis_change(own: tuple[int, ...], theirs: tuple[int, ...], num_classes: int) -> int | None:
    """The checkpoint's class count if ``theirs`` differs from ``own`` only along axes of size num_classes."""
    if len(own) != len(theirs):
        return None
    changed = {b for a, b in zip(own, theirs) if a != b and a == num_classes}
    if len(changed) != 1 or any(a != b and a != num_classes for a, b in zip(own, theirs)):
        return None
    return changed.pop()


def load_for_finetune(model: nn.Module, path: str | os.PathLike) -> FinetuneLoad:
    """Initialise a whole segmentor from a checkpoint (ours or official) trained for another class count.

    The backbone (ViT blocks, Cluster module, Regenerator, CTS policy net) and the head load strictly: every
    key name must match, and every shape, except the head's class-specific parts: keys whose shape differs
    from the model's only along axes of ``model.num_classes`` (the Segmenter head's ``cls_emb`` and
    ``mask_norm``, UPerNet's ``conv_seg``). Those keep the model's own initialisation. The pos-embed grid
    is resampled to the model's image size as for any checkpoint (``fit_backbone``).

    Raises:
        CheckpointError: one line naming the file and the first mismatched keys (another width or depth,
            another k, missing or unexpected keys), or class-specific keys for two different class counts.
    """
    ckpt = read_checkpoint(path)
    try:
        sd = convert_state_dict(unwrap(ckpt))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if not any(k.startswith("backbone.") for k in sd):
        raise CheckpointError(f"{path}: no 'backbone.' keys, expected a whole-segmentor checkpoint (ImageNet "
                              "backbone weights go in model.pretrained)")
    notes: list[str] = []
    backbone_sd = fit_backbone({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")},
                               model.backbone, notes)
    sd = {**{f"backbone.{k}": v for k, v in backbone_sd.items()},
          **{k: v for k, v in sd.items() if not k.startswith("backbone.")}}
    own = model.state_dict()
    sd.update({k: v for k, v in own.items() if _is_buffer_only(k) and k not in sd})
    num_classes = int(model.num_classes)
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        parts = [f"{name} ({len(keys)}): {_first(keys)}" for name, keys in (("missing", missing),
                 ("unexpected", unexpected)) if keys]
        raise CheckpointError(f"{path}: does not fit the model, expected the same architecture: " + "; ".join(parts))
    counts: dict[str, int] = {}
    shapes: list[str] = []
    for k in sorted(k for k in own if own[k].shape != sd[k].shape):
        count = None if k.startswith("backbone.") else _class_axis_change(tuple(own[k].shape), tuple(sd[k].shape),
                                                                            num_classes)
        if count is None:
            shapes.append(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}")
        else:
            counts[k] = count
    if shapes:
        raise CheckpointError(f"{path}: does not fit the model (another width, depth or k?): shape mismatch "
                              f"({len(shapes)}): {_first(shapes)}")
    if len(set(counts.values())) > 1:
        raise CheckpointError(f"{path}: class-specific keys for different class counts ({counts}), expected one")
    for k in counts:
        sd[k] = own[k]  # the model's own (seeded) initialisation
    model.load_state_dict(sd, strict=True)
    return FinetuneLoad(sorted(counts), len(own) - len(counts), num_classes,
                        next(iter(counts.values()), num_classes), notes)
